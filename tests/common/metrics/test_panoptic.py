"""Panoptic quality: hand-made cases, an independent straightforward PQ, the file CLI round trip, 2-process DDP."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.data.coco_panoptic import COCOPanopticDataModule
from common.data.synth.coco_panoptic import write_coco_panoptic
from common.metrics.panoptic import (
    COCOPanopticQuality,
    PanopticFormatError,
    evaluate_panoptic_files,
    id2rgb,
    main,
    panoptic_image_stats,
    rgb2id,
    summarize_panoptic,
)

REPO = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------------------------------------
# hand-made cases on 1 x W strips: segment = [start, stop) columns
# ---------------------------------------------------------------------------------------------------------------
def strip(width: int, spans: dict[int, tuple[int, int]]) -> torch.Tensor:
    m = torch.zeros(1, width, dtype=torch.long)
    for sid, (a, b) in spans.items():
        m[0, a:b] = sid
    return m


def seg(sid: int, cat: int, crowd: int = 0) -> dict:
    return {"id": sid, "category_id": cat, "iscrowd": crowd}


CATS = {0: 0, 1: 1, 2: 2}  # class 0, 1: things; class 2: stuff
IS_THING = [True, True, False]


def one(gt, gsegs, pred, psegs, **kw):
    return panoptic_image_stats(gt, gsegs, pred, psegs, CATS, image="hand", **kw)


def test_perfect_prediction_is_100():
    gt = strip(40, {1: (0, 10), 2: (10, 25), 3: (25, 40)})
    gsegs = [seg(1, 0), seg(2, 1), seg(3, 2)]
    pred = strip(40, {7: (0, 10), 8: (10, 25), 9: (25, 40)})  # different ids, same segments
    s = one(gt, gsegs, pred, [seg(7, 0), seg(8, 1), seg(9, 2)])
    res = summarize_panoptic(s, IS_THING)
    assert res["All"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "n": 3}
    assert res["Things"]["n"] == 2 and res["Stuff"]["n"] == 1
    assert s.tp.tolist() == [1, 1, 1] and s.fp.sum() == 0 and s.fn.sum() == 0


@pytest.mark.parametrize(
    "offset, matched",
    [(9, True), (10, False), (11, False)],  # IoU = (30 - o) / (30 + o): 21/39 > 0.5, exactly 0.5 (strict), 19/41
)
def test_iou_threshold_is_strict(offset, matched):
    gt = strip(60, {1: (0, 30), 5: (30, 60)})
    pred = strip(60, {1: (offset, offset + 30), 5: (offset + 30, 60)})
    s = one(gt, [seg(1, 0), seg(5, 2)], pred, [seg(1, 0), seg(5, 2)])
    iou = (30 - offset) / (30 + offset)
    if matched:
        assert s.tp[0] == 1 and s.fp[0] == 0 and s.fn[0] == 0
        assert s.iou[0].item() == pytest.approx(iou, abs=1e-12)
        assert summarize_panoptic(s, IS_THING)["per_class"][0]["pq"] == pytest.approx(100 * iou)
    else:
        assert s.tp[0] == 0 and s.fp[0] == 1 and s.fn[0] == 1 and s.iou[0] == 0
        assert summarize_panoptic(s, IS_THING)["per_class"][0]["pq"] == 0.0


def test_category_must_agree():
    gt = strip(20, {1: (0, 20)})
    s = one(gt, [seg(1, 0)], strip(20, {4: (0, 20)}), [seg(4, 1)])
    assert s.tp.sum() == 0 and s.fn.tolist() == [1, 0, 0] and s.fp.tolist() == [0, 1, 0]


def test_void_is_removed_from_the_union_and_exempts_false_positives():
    # GT: thing [0, 20), VOID [20, 40). The prediction spills over the VOID: IoU = 20 / (40 + 20 - 20 - 20) = 1.
    gt = strip(40, {1: (0, 20)})
    s = one(gt, [seg(1, 0)], strip(40, {3: (0, 40)}), [seg(3, 0)])
    assert s.tp[0] == 1 and s.iou[0].item() == pytest.approx(1.0)
    # an unmatched prediction more than half on VOID is not a false positive; half or less is
    gt = strip(40, {1: (0, 20)})
    pred = strip(40, {1: (0, 20), 2: (19, 40)})  # 2: 21 px, 20 on VOID -> 20/21 > 0.5 -> ignored
    s = one(gt, [seg(1, 0)], pred, [seg(1, 0), seg(2, 1)])
    assert s.fp.sum() == 0
    pred = strip(40, {1: (0, 12), 2: (12, 28)})  # 1: IoU 0.6; 2: 16 px, 8 on VOID -> 0.5, not > 0.5 -> FP
    s = one(gt, [seg(1, 0)], pred, [seg(1, 0), seg(2, 1)])
    assert s.tp.tolist() == [1, 0, 0] and s.fp.tolist() == [0, 1, 0]


def test_crowd_regions():
    # GT: crowd of class 0 on [0, 20), a normal class-0 thing on [20, 30), stuff [30, 40)
    gt = strip(40, {1: (0, 20), 2: (20, 30), 3: (30, 40)})
    gsegs = [seg(1, 0, crowd=1), seg(2, 0), seg(3, 2)]
    # a class-0 prediction covering the crowd exactly: never a TP (crowd is not matched) and not an FP
    pred = strip(40, {5: (0, 20), 6: (20, 30), 7: (30, 40)})
    s = one(gt, gsegs, pred, [seg(5, 0), seg(6, 0), seg(7, 2)])
    assert s.tp.tolist() == [1, 0, 1] and s.fp.sum() == 0 and s.fn.sum() == 0
    # the same region predicted as class 1: the crowd of class 0 does not exempt it -> FP of class 1
    s = one(gt, gsegs, pred, [seg(5, 1), seg(6, 0), seg(7, 2)])
    assert s.fp.tolist() == [0, 1, 0]
    # crowd + VOID count together: 6 px on crowd + 5 on VOID out of 20 -> 11/20 > 0.5 -> exempt
    gt2 = strip(40, {1: (0, 20), 3: (25, 40)})  # [20, 25) VOID
    pred2 = strip(40, {5: (14, 34), 7: (34, 40)})
    s = one(gt2, [seg(1, 0, crowd=1), seg(3, 2)], pred2, [seg(5, 0), seg(7, 2)])
    assert s.fp[0] == 0
    # a class with crowd GT only and no prediction is left out of the averages
    s = one(gt, gsegs, strip(40, {6: (20, 30), 7: (30, 40)}), [seg(6, 0), seg(7, 2)])
    assert (s.tp + s.fp + s.fn).tolist() == [1, 0, 1]
    assert summarize_panoptic(s, IS_THING)["All"]["n"] == 2


def test_two_crowds_of_one_class_follow_panopticapi():
    # panopticapi keeps ONE crowd segment per category (the last in segments_info): a prediction on the other
    # crowd segment is a false positive
    gt = strip(40, {1: (0, 10), 2: (20, 30)})
    pred = strip(40, {5: (0, 10)})
    s_first = one(gt, [seg(1, 0, 1), seg(2, 0, 1)], pred, [seg(5, 0)])
    s_last = one(gt, [seg(2, 0, 1), seg(1, 0, 1)], pred, [seg(5, 0)])
    assert s_first.fp[0] == 1 and s_last.fp[0] == 0


def test_groups_and_excluded_classes():
    gt = strip(40, {1: (0, 20), 3: (20, 40)})
    pred = strip(40, {1: (0, 20), 3: (26, 40)})  # stuff IoU 14/20 -> TP
    s = one(gt, [seg(1, 0), seg(3, 2)], pred, [seg(1, 0), seg(3, 2)])
    res = summarize_panoptic(s, IS_THING)
    assert res["Things"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "n": 1}  # class 1 absent: excluded
    assert res["Stuff"]["pq"] == pytest.approx(70.0)
    assert res["All"]["pq"] == pytest.approx(85.0) and res["All"]["n"] == 2
    gt = strip(40, {1: (0, 20)})
    res = summarize_panoptic(one(gt, [seg(1, 0)], strip(40, {1: (0, 20)}), [seg(1, 0)]), IS_THING)
    assert res["Stuff"]["n"] == 0 and math.isnan(res["Stuff"]["pq"])


@pytest.mark.parametrize(
    "gt_map, gsegs, pred_map, psegs, message",
    [
        (strip(10, {1: (0, 10)}), [seg(1, 0)], strip(10, {4: (0, 10)}), [], "segment id 4 is in the PNG"),
        (strip(10, {1: (0, 5), 2: (5, 10)}), [seg(1, 0)], strip(10, {1: (0, 10)}), [seg(1, 0)], "segment id 2 is in the PNG"),
        (strip(10, {1: (0, 10)}), [seg(1, 0)], strip(10, {4: (0, 10)}), [seg(4, 9)], "unknown category_id 9"),
        (strip(10, {1: (0, 10)}), [seg(1, 7)], strip(10, {4: (0, 10)}), [seg(4, 0)], "unknown category_id 7"),
        (strip(10, {1: (0, 10)}), [seg(1, 0)], strip(12, {4: (0, 12)}), [seg(4, 0)], "differs from ground-truth size"),
        (strip(10, {1: (0, 10)}), [seg(1, 0)], strip(10, {4: (0, 10)}), [seg(4, 0), seg(5, 0)], "not in the PNG"),
        (strip(10, {1: (0, 10)}), [seg(1, 0), seg(1, 1)], strip(10, {4: (0, 10)}), [seg(4, 0)], "listed twice"),
    ],
)
def test_bad_input_names_image_and_segment(gt_map, gsegs, pred_map, psegs, message):
    with pytest.raises(PanopticFormatError, match=message) as err:
        one(gt_map, gsegs, pred_map, psegs)
    assert "image hand" in str(err.value)


def test_non_strict_ignores_empty_predicted_segments():
    gt = strip(10, {1: (0, 10)})
    s = one(gt, [seg(1, 0)], strip(10, {4: (0, 10)}), [seg(4, 0), seg(5, 1)], strict=False)
    assert s.tp[0] == 1 and s.fp.sum() == 0


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 16777215, 1234567]])
    assert (rgb2id(id2rgb(ids)) == ids).all()
    assert id2rgb(1 + 2 * 256 + 3 * 65536).tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------
# an independent, straightforward PQ on random-ish synthetic cases
# ---------------------------------------------------------------------------------------------------------------
K_RAND = 7
THING_RAND = [True, True, True, True, False, False, False]  # classes 0-3 things, 4-6 stuff


def random_case(rng: np.random.Generator, h: int = 20, w: int = 24):
    """GT: 1-2 stuff bands, 1-5 thing boxes (some crowd, at most one crowd per class), a VOID box; prediction:
    jittered boxes with class flips, drops and spurious boxes (IoUs on both sides of 0.5)."""
    def paint(boxes, stuff):
        m = np.zeros((h, w), dtype=np.int64)
        cut = int(rng.integers(5, h - 5))
        for (sid, _), (a, b) in zip(stuff, [(0, cut), (cut, h)]):
            m[a:b] = sid
        for sid, _, (y0, x0, y1, x1) in boxes:
            m[y0:y1, x0:x1] = sid
        return m

    next_id = iter(range(1, 1000))
    stuff_cls = rng.choice([4, 5, 6], size=2, replace=True)
    gstuff = [(next(next_id), int(c)) for c in stuff_cls]
    gboxes, crowd_cls = [], set()
    for _ in range(int(rng.integers(1, 6))):
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        box = (y0, x0, y0 + int(rng.integers(3, 9)), x0 + int(rng.integers(3, 9)))
        gboxes.append((next(next_id), int(rng.integers(0, 4)), box))
    gt = paint(gboxes, gstuff)
    if rng.random() < 0.6:
        y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        gt[y0:y0 + int(rng.integers(2, 6)), x0:x0 + int(rng.integers(2, 6))] = 0
    gsegs = []
    for sid, cls in gstuff + [(b[0], b[1]) for b in gboxes]:
        if (gt == sid).any() and sid not in [s["id"] for s in gsegs]:
            crowd = int(THING_RAND[cls] and cls not in crowd_cls and rng.random() < 0.25)
            if crowd:
                crowd_cls.add(cls)
            gsegs.append({"id": sid, "category_id": cls, "iscrowd": crowd})
    # merge two bands of the same stuff class into one segment (one segment per stuff class)
    if gstuff[0][1] == gstuff[1][1]:
        gt[gt == gstuff[1][0]] = gstuff[0][0]
        gsegs = [s for s in gsegs if s["id"] != gstuff[1][0]]

    pstuff = [(sid + 100, c if rng.random() > 0.15 else int(rng.integers(4, 7))) for sid, c in gstuff]
    pboxes = []
    for sid, cls, (y0, x0, y1, x1) in gboxes:
        if rng.random() < 0.15:
            continue
        j = rng.integers(-2, 3, size=4)
        box = (max(0, y0 + j[0]), max(0, x0 + j[1]), min(h, max(y0 + j[0] + 1, y1 + j[2])), min(w, max(x0 + j[1] + 1, x1 + j[3])))
        pcls = cls if rng.random() > 0.2 else int(rng.integers(0, 4))
        pboxes.append((sid + 100, pcls, tuple(int(v) for v in box)))
    for _ in range(int(rng.integers(0, 3))):
        y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        pboxes.append((next(next_id) + 500, int(rng.integers(0, 4)), (y0, x0, y0 + 3, x0 + 4)))
    pred = paint(pboxes, pstuff)
    if rng.random() < 0.3:
        pred[: int(rng.integers(1, 4))] = 0  # predicted VOID rows
    psegs, seen = [], set()
    for sid, cls in pstuff + [(b[0], b[1]) for b in pboxes]:
        if (pred == sid).any() and sid not in seen:
            seen.add(sid)
            psegs.append({"id": sid, "category_id": cls})
    return gt, gsegs, pred, psegs


def reference_pq(cases, k: int, is_thing):
    """Textbook PQ with boolean masks and a double loop (no shared code with the metric)."""
    iou, tp, fp, fn = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    inter_c, gt_c, pred_c = np.zeros(k), np.zeros(k), np.zeros(k)
    for gt, gsegs, pred, psegs in cases:
        void = gt == 0
        gm = {s["id"]: gt == s["id"] for s in gsegs}
        pm = {s["id"]: pred == s["id"] for s in psegs}
        mg, mp = set(), set()
        for g in gsegs:
            if g["iscrowd"]:
                continue
            for p in psegs:
                if p["category_id"] != g["category_id"]:
                    continue
                a, b = gm[g["id"]], pm[p["id"]]
                inter = np.logical_and(a, b).sum()
                union = a.sum() + b.sum() - inter - np.logical_and(b, void).sum()
                if inter / union > 0.5:
                    tp[g["category_id"]] += 1
                    iou[g["category_id"]] += inter / union
                    mg.add(g["id"])
                    mp.add(p["id"])
        for g in gsegs:
            if not g["iscrowd"] and g["id"] not in mg:
                fn[g["category_id"]] += 1
        for p in psegs:
            if p["id"] in mp:
                continue
            crowd = np.zeros_like(void)
            for g in gsegs:
                if g["iscrowd"] and g["category_id"] == p["category_id"]:
                    crowd |= gm[g["id"]]
            b = pm[p["id"]]
            if np.logical_and(b, void | crowd).sum() / b.sum() > 0.5:
                continue
            fp[p["category_id"]] += 1
        # semantic
        gsem = np.full(gt.shape, -1)
        psem = np.full(gt.shape, -1)
        for s in gsegs:
            gsem[gm[s["id"]]] = s["category_id"]
        for s in psegs:
            psem[pm[s["id"]]] = s["category_id"]
        lab = gsem >= 0
        for c in range(k):
            inter_c[c] += np.sum((gsem == c) & (psem == c) & lab)
            gt_c[c] += np.sum(gsem == c)
            pred_c[c] += np.sum((psem == c) & lab)
    out, per = {}, []
    for c in range(k):
        d = tp[c] + fp[c] / 2 + fn[c] / 2
        per.append(None if d == 0 else (100 * iou[c] / d, 100 * (iou[c] / tp[c] if tp[c] else 0.0), 100 * tp[c] / d))
    for name, sel in (("All", [True] * k), ("Things", is_thing), ("Stuff", [not t for t in is_thing])):
        vals = [per[c] for c in range(k) if sel[c] and per[c] is not None]
        out[name] = tuple(float(np.mean([v[i] for v in vals])) for i in range(3)) + (len(vals),)
    union = gt_c + pred_c - inter_c
    out["miou"] = float(np.mean(100 * inter_c[union > 0] / union[union > 0]))
    return out, per


@pytest.fixture(scope="module")
def random_cases():
    rng = np.random.default_rng(2024)
    return [random_case(rng) for _ in range(60)]


def check_against_reference(summary, cases):
    ref, per = reference_pq(cases, K_RAND, THING_RAND)
    for name in ("All", "Things", "Stuff"):
        got = summary[name]
        assert (got["pq"], got["sq"], got["rq"], got["n"]) == pytest.approx(ref[name], abs=1e-9), name
    for c in range(K_RAND):
        row = summary["per_class"][c]
        assert row["counted"] == (per[c] is not None)
        if per[c] is not None:
            assert (row["pq"], row["sq"], row["rq"]) == pytest.approx(per[c], abs=1e-9)
    assert summary["miou"] == pytest.approx(ref["miou"], abs=1e-9)


def test_metric_equals_independent_reference(random_cases):
    metric = COCOPanopticQuality(K_RAND, THING_RAND)
    for gt, gsegs, pred, psegs in random_cases:
        metric.update([{"panoptic": torch.from_numpy(pred), "segments_info": psegs}],
                      [(torch.from_numpy(gt), gsegs)])
    out = metric.compute()
    summary = metric.summary()
    check_against_reference(summary, random_cases)
    ref, _ = reference_pq(random_cases, K_RAND, THING_RAND)
    # the cases exercise every rule: matches on both sides of 0.5, FPs, FNs, crowd and VOID
    assert 0 < ref["All"][0] < 100
    assert sum(s["iscrowd"] for c in random_cases for s in c[1]) >= 5
    assert out["pq"].item() == pytest.approx(summary["All"]["pq"], rel=1e-6)
    assert out["pq_th"].item() == pytest.approx(summary["Things"]["pq"], rel=1e-6)
    assert out["miou"].item() == pytest.approx(ref["miou"], rel=1e-6)
    assert summary["num_images"] == len(random_cases)


# ---------------------------------------------------------------------------------------------------------------
# files: the CLI round trip on the writer's output
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def panoptic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco_panoptic")
    write_coco_panoptic(root, num_train=1, num_val=10, size=(40, 48), seed=3, crowd_prob=0.5, progress=False)
    return root


def perturb_predictions(root: Path, out: Path) -> tuple[Path, Path]:
    """A prediction set from the GT: drop one thing per image to VOID, shift stuff borders, flip a category."""
    gt = json.loads((root / "annotations/panoptic_val2017.json").read_text())
    cat_ids = [c["id"] for c in gt["categories"]]
    thing_ids = {c["id"] for c in gt["categories"] if c["isthing"]}
    rng = np.random.default_rng(0)
    folder = out / "pred"
    folder.mkdir(parents=True)
    anns = []
    for ann in gt["annotations"]:
        ids = rgb2id(np.asarray(Image.open(root / "annotations/panoptic_val2017" / ann["file_name"]).convert("RGB")))
        segs = [dict(id=s["id"], category_id=s["category_id"]) for s in ann["segments_info"]]
        things = [s for s in ann["segments_info"] if s["category_id"] in thing_ids and not s["iscrowd"]]
        if things and rng.random() < 0.7:
            drop = things[int(rng.integers(len(things)))]["id"]
            ids[ids == drop] = 0
        ids = np.roll(ids, int(rng.integers(-3, 4)), axis=0)
        if rng.random() < 0.5:
            segs[0]["category_id"] = int(rng.choice(cat_ids))
        present = set(np.unique(ids).tolist())
        segs = [s for s in segs if s["id"] in present]
        Image.fromarray(id2rgb(ids)).save(folder / ann["file_name"])
        anns.append({"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs})
    pred_json = out / "pred.json"
    pred_json.write_text(json.dumps({"annotations": anns}))
    return pred_json, folder


def test_cli_gt_against_itself_is_100(panoptic_root):
    gt_json = panoptic_root / "annotations/panoptic_val2017.json"
    proc = subprocess.run(
        [sys.executable, "-m", "common.metrics.panoptic", "--gt-json", str(gt_json), "--gt-folder",
         str(panoptic_root / "annotations/panoptic_val2017"), "--pred-json", str(gt_json), "--pred-folder",
         str(panoptic_root / "annotations/panoptic_val2017"), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for group in ("All", "Things", "Stuff"):
        assert res[group]["pq"] == 100.0 and res[group]["n"] > 0
    assert res["miou"] == 100.0 and res["num_images"] == 10


def test_cli_perturbed_prediction_equals_tensor_metric(panoptic_root, tmp_path, capsys):
    pred_json, pred_folder = perturb_predictions(panoptic_root, tmp_path)
    gt_json = panoptic_root / "annotations/panoptic_val2017.json"
    args = ["--gt-json", str(gt_json), "--pred-json", str(pred_json), "--pred-folder", str(pred_folder)]
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 20 < res["All"]["pq"] < 100
    assert res["per_class"][0]["category_id"] == 1 and res["per_class"][0]["name"] == "person"
    # the table view prints the same numbers
    assert main([*args, "--per-class", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert f"{res['All']['pq']:.1f}" in table and "person" in table

    # the tensor metric fed from the datamodule's evaluation batches (+ the prediction PNGs) gives the same numbers
    dm = COCOPanopticDataModule(str(panoptic_root), batch_size=4, eval_batch_size=3)
    dm.setup("validate")
    info = dm.info
    to_class = {cid: i for i, cid in enumerate(info["category_ids"])}
    preds_by_file = {a["file_name"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    metric = COCOPanopticQuality(info["num_classes"], info["is_thing"], info["class_names"])
    n = 0
    for batch in dm.val_dataloader():
        preds = []
        for t in batch["targets"]:
            ann = preds_by_file[Path(t["file_name"]).with_suffix(".png").name]
            ids = rgb2id(np.asarray(Image.open(pred_folder / ann["file_name"]).convert("RGB")))
            preds.append({"panoptic": torch.from_numpy(ids),
                          "segments_info": [{"id": s["id"], "category_id": to_class[s["category_id"]]}
                                            for s in ann["segments_info"]]})
        metric.update(preds, batch["targets"])
        n += len(preds)
    assert n == 10
    summary = metric.summary()
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq", "n"):
            assert summary[group][key] == pytest.approx(res[group][key], abs=1e-9)
    assert summary["miou"] == pytest.approx(res["miou"], abs=1e-9)
    assert [r["pq"] for r in summary["per_class"]] == pytest.approx([r["pq"] for r in res["per_class"]], abs=1e-9)


def test_file_evaluator_errors(panoptic_root, tmp_path):
    gt_json = panoptic_root / "annotations/panoptic_val2017.json"
    gt = json.loads(gt_json.read_text())
    # an image without a prediction
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"annotations": gt["annotations"][1:]}))
    with pytest.raises(PanopticFormatError, match="no prediction for the image"):
        evaluate_panoptic_files(gt_json, partial, pred_folder=panoptic_root / "annotations/panoptic_val2017", progress=False)
    # a PNG id missing from the prediction JSON: the message names the image and the segment
    first = dict(gt["annotations"][0])
    dropped = first["segments_info"][0]["id"]
    first["segments_info"] = first["segments_info"][1:]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"annotations": [first] + gt["annotations"][1:]}))
    with pytest.raises(PanopticFormatError, match=f"segment id {dropped} is in the PNG") as err:
        evaluate_panoptic_files(gt_json, broken, pred_folder=panoptic_root / "annotations/panoptic_val2017", progress=False)
    assert first["file_name"] in str(err.value)
    # missing folder -> CLI exit code 2 with a message
    assert main(["--gt-json", str(gt_json), "--pred-json", str(broken), "--json"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# DDP: 2 processes (gloo) == 1 process
# ---------------------------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, port: int, cases, out_file: str) -> None:
    """One DDP rank (forked, so torchmetrics is not imported again): update on its shard, compute (synced)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metric = COCOPanopticQuality(K_RAND, THING_RAND)
        for gt, gsegs, pred, psegs in cases[rank::world]:
            metric.update([(pred, psegs)], [(gt, gsegs)])
        local_images = int(metric.num_images)
        out = {k: v.item() for k, v in metric.compute().items()}
        summary = metric.summary()
        if rank == 0:
            Path(out_file).write_text(json.dumps({"compute": out, "summary": summary, "local_images": local_images}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one(random_cases, tmp_path):
    cases = [(torch.from_numpy(g), gs, torch.from_numpy(p), ps) for g, gs, p, ps in random_cases[:23]]  # odd count
    port = _free_port()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, cases, str(tmp_path / "out.json"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    ddp = json.loads((tmp_path / "out.json").read_text())

    single = COCOPanopticQuality(K_RAND, THING_RAND)
    for gt, gsegs, pred, psegs in cases:
        single.update([(pred, psegs)], [(gt, gsegs)])
    ref = {k: v.item() for k, v in single.compute().items()}
    assert ddp["compute"] == pytest.approx(ref, abs=1e-6)
    assert ddp["summary"]["num_images"] == 23 and ddp["local_images"] == 12  # each rank saw its shard only
    assert [r["tp"] for r in ddp["summary"]["per_class"]] == [r["tp"] for r in single.summary()["per_class"]]
    check_against_reference(ddp["summary"], [(g.numpy(), gs, p.numpy(), ps) for g, gs, p, ps in cases])
