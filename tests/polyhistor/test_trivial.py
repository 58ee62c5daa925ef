"""The trivial row (constant predictor per task) on a hand-made split whose metrics are computed by hand."""

import math
import statistics

import pytest
import torch

from benchmarks.reproduce import RowResult
from benchmarks.reproduce.polyhistor import table_rows
from common.metrics.dense import delta_m
from polyhistor.trivial import trivial_metrics

OUTPUTS = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}
TASKS = list(OUTPUTS)


def _batches(sal_mostly_salient: bool = False) -> list[dict[str, torch.Tensor]]:
    """Two batches of one 2x2 image each."""
    sal = ([[[1, 1], [1, 0]]], [[[1, 1], [1, 255]]]) if sal_mostly_salient else ([[[1, 0], [0, 0]]],
                                                                                  [[[1, 1], [0, 255]]])
    z, x = [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]
    # normals: image 1 all +z, image 2 all +x but one pixel invalid -> 4 z and 3 x pixels
    n1 = torch.tensor([z] * 4).T.reshape(1, 3, 2, 2)
    n2 = torch.tensor([x] * 4).T.reshape(1, 3, 2, 2)
    return [
        {"semseg": torch.tensor([[[0, 0], [0, 5]]]), "human_parts": torch.tensor([[[0, 0], [0, 0]]]),
         "sal": torch.tensor(sal[0]), "normals": n1, "normals_mask": torch.ones(1, 2, 2, dtype=torch.bool)},
        {"semseg": torch.tensor([[[0, 255], [5, 5]]]), "human_parts": torch.tensor([[[0, 1], [2, 2]]]),
         "sal": torch.tensor(sal[1]), "normals": n2, "normals_mask": torch.tensor([[[True, True], [True, False]]])},
    ]


def test_trivial_metrics_match_the_hand_computed_values():
    batches = _batches()
    m = trivial_metrics(lambda: iter(batches), TASKS, OUTPUTS)
    # semseg, all background (the 255 pixel left out): class 0 TP 4, FP 3 (the class-5 pixels) -> 4/7; class 5 -> 0;
    # the mean over the two classes present
    assert m["semseg/mIoU"] == pytest.approx(100 * 2 / 7)
    # parts: only image 2 has people; background TP 1, FP 3 -> 0.25; parts 1 and 2 -> 0; 3 classes present
    assert m["human_parts/mIoU"] == pytest.approx(100 * 0.25 / 3)
    # saliency: all salient scores the per-image Jaccard 1/4 and 2/3 (mean 11/24); none salient 0 -> all salient
    assert m["sal_constant"] == 1.0
    assert m["sal/mIoU"] == pytest.approx(100 * 11 / 24)
    # normals: mean of 4 x (0,0,1) and 3 x (1,0,0) = (3, 0, 4) / 5; angle to +z acos(0.8), to +x acos(0.6)
    assert (m["normals_constant_x"], m["normals_constant_y"], m["normals_constant_z"]) == pytest.approx((0.6, 0, 0.8))
    expect = (4 * math.degrees(math.acos(0.8)) + 3 * math.degrees(math.acos(0.6))) / 7
    assert m["normals/mean"] == pytest.approx(expect, abs=1e-6)


def test_trivial_saliency_keeps_the_better_constant():
    # almost every pixel salient: "all salient" is better; with the complement, "none salient" can win only when
    # images have no salient pixel (Jaccard 1 for an empty prediction of an empty mask)
    m = trivial_metrics(lambda: iter(_batches(sal_mostly_salient=True)), ["sal"], OUTPUTS)
    assert m["sal/mIoU"] == pytest.approx(100 * (3 / 4 + 1) / 2)
    empty = [{"sal": torch.zeros(1, 2, 2, dtype=torch.long)}, {"sal": torch.tensor([[[1, 0], [0, 0]]])}]
    m = trivial_metrics(lambda: iter(empty), ["sal"], OUTPUTS)
    assert m["sal_constant"] == 0.0 and m["sal/mIoU"] == pytest.approx(50.0)


def test_table_puts_the_trivial_row_first_with_its_delta_m():
    single = {"semseg": 40.0, "human_parts": 30.0, "sal": 60.0, "normals": 20.0}
    results = {f"single_task_{t}": RowResult(f"single_task_{t}", "finished", "h",
                                             metrics={f"val/{t}/{'mean' if t == 'normals' else 'mIoU'}": v},
                                             trainable_params=10)
               for t, v in single.items()}
    trivial = {"semseg/mIoU": 10.0, "human_parts/mIoU": 15.0, "sal/mIoU": 30.0, "normals/mean": 25.0,
               "sal_constant": 1.0}
    rows = table_rows(results, trivial)
    assert [r["key"] for r in rows] == ["trivial", "single_task"]
    t = rows[0]
    assert (t["semseg"], t["human_parts"], t["sal"], t["normals"], t["params_m"]) == (10.0, 15.0, 30.0, 25.0, 0.0)
    want = delta_m({"semseg": 10.0, "human_parts": 15.0, "sal": 30.0, "normals": 25.0}, single, ("normals",))
    assert t["delta_m"] == pytest.approx(want) and want == pytest.approx(100 * (-0.75 - 0.5 - 0.5 - 0.25) / 4)
    assert t["params_m_paper"] is None and t["delta_m_paper"] is None


def _row(key: str, values: dict[str, float]) -> RowResult:
    return RowResult(key, "finished", "h", trainable_params=1000,
                     metrics={f"val/{t}/{'mean' if t == 'normals' else 'mIoU'}": v for t, v in values.items()})


def test_seeded_rows_show_mean_and_std_and_each_run_keeps_its_own_delta_m():
    from benchmarks.reproduce.polyhistor import EXTRA_SEEDS, SEEDED_METHODS, make_plan, markdown

    single = {"semseg": 40.0, "human_parts": 30.0, "sal": 60.0, "normals": 20.0}
    results = {f"single_task_{t}": _row(f"single_task_{t}", {t: v}) for t, v in single.items()}
    seeds = {"adapter": 30.0, "adapter_seed43": 32.0, "adapter_seed44": 37.0}
    for k, semseg in seeds.items():
        results[k] = _row(k, {**single, "semseg": semseg})
    results["adapterx_seed43"] = _row("adapterx_seed43", {**single, "semseg": 0.0})  # not a seed of "adapter"
    row = next(r for r in table_rows(results) if r["key"] == "adapter")
    assert row["seeds"] == 3 and row["semseg"] == pytest.approx(33.0)
    assert row["semseg_std"] == pytest.approx(statistics.stdev([30.0, 32.0, 37.0]))
    assert row["human_parts_std"] == 0.0
    own = {k: delta_m({**single, "semseg": v}, single, ("normals",)) for k, v in seeds.items()}
    assert row["delta_m_of"] == pytest.approx(own)
    assert row["delta_m"] == pytest.approx(statistics.fmean(own.values()))
    assert row["delta_m_std"] == pytest.approx(statistics.stdev(own.values()))
    line = next(ln for ln in markdown(table_rows(results), "h").splitlines() if ln.startswith("| Adapter"))
    assert "(3 seeds)" in line and f"33.00 ± {row['semseg_std']:.2f}" in line
    # the tiny plan runs every seeded row at the extra seeds, after the first seed of every row
    keys = [r.key for r in make_plan("tiny").rows]
    extra = [k for k in keys if "_seed" in k]
    assert len(extra) == len(SEEDED_METHODS) * len(EXTRA_SEEDS["tiny"])
    assert keys.index(extra[0]) == len(keys) - len(extra)
    assert next(r for r in make_plan("tiny").rows if r.key == "adapter_seed44").overrides[-1] == "--seed_everything=44"
    assert not [r for r in make_plan("smoke").rows if "_seed" in r.key]
