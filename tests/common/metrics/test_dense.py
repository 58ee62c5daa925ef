"""Dense metrics against hand-computed cases, Δm against the paper's table, and 2-process DDP == 1 process."""

from __future__ import annotations

import math
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from common.metrics.dense import SALIENCY_THRESHOLDS, NormalsMetrics, SaliencyMetrics, SemSegMIoU, delta_m

# ----------------------------------------------------------------------------------------------------------------
# SemSegMIoU
# ----------------------------------------------------------------------------------------------------------------


def test_semseg_perfect_prediction_is_100() -> None:
    target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    m = SemSegMIoU(3)
    m.update(target.clone(), target)
    assert m.compute().item() == pytest.approx(100.0)


def test_semseg_known_confusion_and_ignore() -> None:
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; the ignored pixel (wrongly predicted) does not count
    target = torch.tensor([[0, 0, 1, 1, 255]])
    preds = torch.tensor([[0, 1, 1, 1, 0]])
    m = SemSegMIoU(2)
    m.update(preds, target)
    assert m.per_class_iou().tolist() == pytest.approx([0.5, 2 / 3])
    assert m.compute().item() == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    # logits give the same as labels
    logits = torch.nn.functional.one_hot(preds.clamp(0, 1), 2).permute(0, 2, 1).float()
    m2 = SemSegMIoU(2)
    m2.update(logits[:, :, None, :], target[:, None, :])
    assert m2.compute().item() == pytest.approx(m.compute().item())


def test_semseg_absent_class_counts_zero_unless_ignored() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    m = SemSegMIoU(4)  # classes 2 and 3 never occur
    m.update(target.clone(), target)
    assert m.compute().item() == pytest.approx(50.0)  # lineage: mean over all 4 classes
    m2 = SemSegMIoU(4, ignore_absent=True)
    m2.update(target.clone(), target)
    assert m2.compute().item() == pytest.approx(100.0)


def test_parts_miou_only_counts_images_with_people() -> None:
    with_person = torch.tensor([[0, 1, 2, 2]])
    no_person = torch.tensor([[0, 0, 0, 0]])  # upstream-style target without a person: all background
    target = torch.stack([with_person, no_person])
    preds = torch.stack([with_person, torch.tensor([[3, 3, 3, 3]])])  # garbage on the person-less image
    m = SemSegMIoU(4, foreground_images_only=True, ignore_absent=True)
    m.update(preds, target)
    assert m.compute().item() == pytest.approx(100.0)
    assert int(m.num_images) == 1
    m_all = SemSegMIoU(4, ignore_absent=True)
    m_all.update(preds, target)
    assert m_all.compute().item() < 60.0


# ----------------------------------------------------------------------------------------------------------------
# SaliencyMetrics
# ----------------------------------------------------------------------------------------------------------------


def test_saliency_thresholds_are_the_lineage_ones() -> None:
    assert len(SALIENCY_THRESHOLDS) == 15
    assert SALIENCY_THRESHOLDS[0] == pytest.approx(0.2) and SALIENCY_THRESHOLDS[-1] == pytest.approx(0.9)
    assert SALIENCY_THRESHOLDS[1] - SALIENCY_THRESHOLDS[0] == pytest.approx(0.05)


def test_saliency_single_image_hand_computed() -> None:
    # gt [1, 1, 0, 0]; probs [0.95, 0.27, 0.62, 0.1] (+ an ignored pixel predicted salient)
    #   t in {0.2, 0.25}:   pred [1, 1, 1, 0]  J 2/3  P 2/3  R 1
    #   t in {0.3 .. 0.6}:  pred [1, 0, 1, 0]  J 1/3  P 1/2  R 1/2
    #   t in {0.65 .. 0.9}: pred [1, 0, 0, 0]  J 1/2  P 1    R 1/2
    target = torch.tensor([[[1, 1, 0, 0, 255]]])
    probs = torch.tensor([[[0.95, 0.27, 0.62, 0.1, 0.99]]])
    m = SaliencyMetrics()
    m.update(probs, target)
    out = m.compute()
    assert out["mIoU"].item() == pytest.approx(100 * 2 / 3)
    # F_0.3 = 1.3 P R / (0.3 P + R): 0.7222, 0.5, 0.8125 -> maxF 81.25
    assert out["maxF"].item() == pytest.approx(81.25)
    m1 = SaliencyMetrics(beta2=1.0)  # F1: 0.8, 0.5, 0.6667 -> 80
    m1.update(probs, target)
    assert m1.compute()["maxF"].item() == pytest.approx(80.0)
    # logits in, same result
    ml = SaliencyMetrics(from_logits=True)
    ml.update(torch.logit(probs.double()), target)
    assert ml.compute()["mIoU"].item() == pytest.approx(100 * 2 / 3)


def test_saliency_mean_over_images_then_max_over_thresholds() -> None:
    # image A: gt [1,1,0,0], probs [0.95,0.62,0.27,0.1]: J = 2/3 (t<=0.25), 1 (0.3..0.6), 1/2 (>=0.65)
    # image B: empty gt, probs [0.5,0.1,0.1,0.1]: J = 0 (t<0.5), 1 (t>=0.5: both empty)
    # mean J: 1/3, 1/2 (0.3..0.45), 1 (0.5..0.6), 3/4 -> mIoU 100; a perfect threshold exists only jointly
    target = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    probs = torch.tensor([[[0.95, 0.62, 0.27, 0.1]], [[0.5, 0.1, 0.1, 0.1]]])
    m = SaliencyMetrics()
    m.update(probs, target)
    out = m.compute()
    assert out["mIoU"].item() == pytest.approx(100.0)
    # mean P / R: (1/3, 1/2), (1/2, 1/2), (1/2, 1/2), (1/2, 1/4) -> F_0.3 max = 0.5
    assert out["maxF"].item() == pytest.approx(50.0)
    # an all-ignored image is left out, not scored as a perfect empty mask
    m.update(torch.zeros(1, 1, 4), torch.full((1, 1, 4), 255))
    assert int(m.num_images) == 2
    assert m.compute()["mIoU"].item() == pytest.approx(100.0)


# ----------------------------------------------------------------------------------------------------------------
# NormalsMetrics
# ----------------------------------------------------------------------------------------------------------------


def _normals_case() -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    angles = [0.0, 10.0, 20.0, 45.0, 90.0, 180.0]
    gt = torch.tensor(
        [[math.cos(math.radians(a)), math.sin(math.radians(a)), 0.0] for a in angles] + [[0.0, 0.0, 0.0]]
    )
    pred = torch.tensor([[2.0, 0.0, 0.0]]).repeat(len(angles) + 1, 1)  # not unit length on purpose
    pred[-1] = torch.tensor([0.0, 1.0, 0.0])  # the invalid pixel: anything
    return pred.T.reshape(1, 3, 1, -1), gt.T.reshape(1, 3, 1, -1), angles


def test_normals_known_angles() -> None:
    pred, gt, angles = _normals_case()
    m = NormalsMetrics()
    m.update(pred, gt)  # validity from the zero target vector
    out = m.compute()
    errs = np.array(angles)
    assert out["mean"].item() == pytest.approx(errs.mean(), abs=1e-6)
    assert out["rmse"].item() == pytest.approx(math.sqrt((errs**2).mean()), abs=1e-6)
    assert abs(out["median"].item() - np.median(errs)) <= 0.01  # 32.5, to the histogram's bin width
    assert out["within_11.25"].item() == pytest.approx(100 * 2 / 6)
    assert out["within_22.5"].item() == pytest.approx(100 * 3 / 6)
    assert out["within_30"].item() == pytest.approx(100 * 3 / 6)
    # an explicit mask: only the first three pixels
    mask = torch.zeros(1, 1, 7, dtype=torch.bool)
    mask[..., :3] = True
    m2 = NormalsMetrics()
    m2.update(pred, gt, mask)
    assert m2.compute()["mean"].item() == pytest.approx(10.0, abs=1e-6)
    assert m2.compute()["median"].item() == pytest.approx(10.0, abs=0.01)


def test_normals_median_matches_numpy_on_many_errors() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 17, 19, generator=g)
    gt = torch.randn(2, 3, 17, 19, generator=g)
    m = NormalsMetrics()
    m.update(pred, gt)
    p = pred / pred.norm(dim=1, keepdim=True)
    t = gt / gt.norm(dim=1, keepdim=True)
    ref = torch.rad2deg(torch.acos((p * t).sum(1).clamp(-1, 1))).flatten().double().numpy()
    out = m.compute()
    assert abs(out["median"].item() - np.median(ref)) <= 0.01
    assert out["mean"].item() == pytest.approx(ref.mean(), abs=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Δm
# ----------------------------------------------------------------------------------------------------------------

PAPER_SINGLE_TASK = {"semseg": 67.21, "human_parts": 61.93, "sal": 62.35, "normals": 17.97}
PAPER_POLYHISTOR = {"semseg": 70.87, "human_parts": 59.54, "sal": 65.47, "normals": 17.47}


def test_delta_m_polyhistor_row() -> None:
    dm = delta_m(PAPER_POLYHISTOR, PAPER_SINGLE_TASK, lower_is_better={"normals"})
    assert round(dm, 2) == 2.34
    assert delta_m(PAPER_POLYHISTOR, PAPER_SINGLE_TASK, {"normals": True, "semseg": False}) == pytest.approx(
        dm
    )
    # the sign matters: treating normals as higher-is-better changes the result
    assert round(delta_m(PAPER_POLYHISTOR, PAPER_SINGLE_TASK, lower_is_better=()), 2) != 2.34
    assert delta_m(PAPER_SINGLE_TASK, PAPER_SINGLE_TASK) == 0.0


def test_delta_m_missing_baseline_task() -> None:
    with pytest.raises(KeyError, match="human_parts"):
        delta_m(PAPER_POLYHISTOR, {"semseg": 1.0, "sal": 1.0, "normals": 1.0})


# ----------------------------------------------------------------------------------------------------------------
# DDP: 2 processes (gloo, CPU) give exactly the 1-process numbers
# ----------------------------------------------------------------------------------------------------------------


def _ddp_metrics(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Every rank builds the same 5 batches, updates the metrics with its share, and computes (synced)."""
    g = torch.Generator().manual_seed(1234)
    batches = []
    for b in range(5):  # batches of different sizes, split unevenly over the ranks
        n = 1 + b % 3
        seg_t = torch.randint(0, 5, (n, 9, 11), generator=g)
        seg_t[torch.rand(n, 9, 11, generator=g) < 0.1] = 255
        seg_p = torch.randn(n, 5, 9, 11, generator=g)
        sal_t = (torch.rand(n, 9, 11, generator=g) < 0.4).long()
        sal_p = torch.rand(n, 9, 11, generator=g)
        nrm_t = torch.randn(n, 3, 9, 11, generator=g)
        nrm_p = nrm_t + 0.7 * torch.randn(n, 3, 9, 11, generator=g)
        mask = torch.rand(n, 9, 11, generator=g) < 0.8
        batches.append((seg_p, seg_t, sal_p, sal_t, nrm_p, nrm_t, mask))
    seg, sal, nrm = SemSegMIoU(5), SaliencyMetrics(), NormalsMetrics()
    for i, (seg_p, seg_t, sal_p, sal_t, nrm_p, nrm_t, mask) in enumerate(batches):
        if i % world == rank:
            seg.update(seg_p, seg_t)
            sal.update(sal_p, sal_t)
            nrm.update(nrm_p, nrm_t, mask)
    res = {"semseg": seg.compute()}
    res.update({"sal_" + k: v for k, v in sal.compute().items()})
    res.update({"nrm_" + k: v for k, v in nrm.compute().items()})
    with seg.sync_context():  # the confusion matrix summed over the ranks
        res["confmat"] = seg.confmat.clone()
    return res


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    """One gloo rank (runs in a forked child)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        res = _ddp_metrics(rank, world)
        if rank == 0:
            torch.save(res, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one(tmp_path: Path) -> None:
    one = _ddp_metrics(0, 1)  # one process, no process group

    out, store = tmp_path / "result.pt", tmp_path / "store"
    ctx = mp.get_context("fork")  # children inherit the imported modules: no second torch import
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(store), str(out))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0, 0], f"metric ranks failed: exit codes {codes}"
    two = torch.load(out)

    assert torch.equal(one["confmat"], two["confmat"])
    assert set(one) == set(two)
    for k in one:
        assert torch.allclose(one[k].double(), two[k].double(), rtol=0, atol=1e-9), k
    # the 1-process run saw every batch: its confusion matrix counts every non-ignored pixel of all 5 batches
    assert int(one["confmat"].sum()) > 0.85 * (1 + 2 + 3 + 1 + 2) * 9 * 11
