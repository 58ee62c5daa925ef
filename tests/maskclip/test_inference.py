"""MaskCLIP inference (maskclip/inference.py): panoptic assembly on known logits, semantic, instance (column fix)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskclip.inference import instance_inference, panoptic_inference, semantic_inference

ON, OFF = 10.0, -10.0


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """4 x 4 image; classes 0 (thing), 1, 2 (stuff), column 3 = no-object.

    q0: class 0, columns 0-1; q1: class 1, rows 0-1 of columns 2-3; q2: class 1 again, rows 2-3 of columns 2-3 except
    pixel (3, 3); q3: class 2 at p ~ 0.475 over the whole image; q4: no-object over the whole image."""
    cls = torch.tensor([[ON, 0, 0, 0], [0, ON, 0, 0], [0, ON, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, ON]])
    m = torch.full((5, 4, 4), OFF)
    m[0, :, :2] = ON
    m[1, :2, 2:] = ON
    m[2, 2:, 2:] = ON
    m[2, 3, 3] = OFF
    m[3] = ON
    m[4] = ON
    return cls, m


def test_panoptic_assembly_thresholds_stuff_merge_and_void() -> None:
    cls, masks = _case()
    seg, info = panoptic_inference(cls, masks, thing_classes={0}, has_no_object=True)
    expect = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 0]], dtype=torch.int32)
    assert torch.equal(seg, expect)       # q3 under the object threshold, q4 no-object: (3, 3) unassigned = VOID
    assert info == [{"id": 1, "category_id": 0, "isthing": True},
                    {"id": 2, "category_id": 1, "isthing": False}]  # q1 and q2 merged: one stuff segment
    # ADE's threshold 0.3 keeps q3; it wins only (3, 3): 1/16 of its own mask < overlap 0.5 -> dropped, VOID stays
    seg3, info3 = panoptic_inference(cls, masks, {0}, has_no_object=True, object_threshold=0.3)
    assert torch.equal(seg3, expect) and info3 == info
    # with no overlap requirement q3 becomes a segment on (3, 3)
    seg0, info0 = panoptic_inference(cls, masks, {0}, has_no_object=True, object_threshold=0.3,
                                     overlap_threshold=0.0)
    assert seg0[3, 3] == 3 and info0[-1] == {"id": 3, "category_id": 2, "isthing": False}
    # without a no-object column, column 3 is a real class: q4 is kept (and takes (3, 3))
    seg4, info4 = panoptic_inference(cls, masks, {0}, has_no_object=False, overlap_threshold=0.0)
    assert seg4[3, 3] != 0 and info4[-1]["category_id"] == 3
    # nothing above the threshold: all VOID
    seg_none, info_none = panoptic_inference(cls, masks, {0}, object_threshold=1.0)
    assert not seg_none.any() and info_none == []


def test_semantic_drops_only_a_no_object_column() -> None:
    cls, masks = _case()
    assert semantic_inference(cls, masks, has_no_object=True).shape == (3, 4, 4)
    sem = semantic_inference(cls, masks, has_no_object=False)
    assert sem.shape == (4, 4, 4)
    torch.testing.assert_close(sem, torch.einsum("qc,qhw->chw", cls.softmax(-1), masks.sigmoid()))


def test_instance_inference_keeps_the_last_real_class_aligned() -> None:
    """At evaluation "other" is not appended: the official [:, :-1] drops the last real class and its labels
    (arange(C) per query) no longer line up with the flattened scores. Here the last column is a class."""
    c = 3
    cls = torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])          # q0 -> class 2 (the last), q1 -> class 0
    masks = torch.full((2, 4, 4), OFF)
    masks[0, :2] = 4.0
    masks[1, 2:] = 2.0
    out = instance_inference(cls, masks, has_no_object=False, topk=2)
    got = {(int(q), int(lab)) for q, lab in zip(out["queries"], out["labels"])}
    assert got == {(0, 2), (1, 0)}
    probs = F.softmax(cls, -1)
    for q, lab, score, mask in zip(out["queries"], out["labels"], out["scores"], out["masks"]):
        assert torch.equal(mask, masks[q] > 0)
        torch.testing.assert_close(score, probs[q, lab] * masks[q].sigmoid()[mask].mean(), rtol=1e-5, atol=1e-6)
    # every (query, class) pair appears once with its own probability (topk = Q x C)
    full = instance_inference(cls, masks, has_no_object=False, topk=100)
    assert len(full["labels"]) == 2 * c and int(full["labels"].max()) == c - 1
    # with a no-object column (training layout) it is the one dropped
    with_other = instance_inference(torch.cat([cls, torch.zeros(2, 1)], 1), masks, has_no_object=True, topk=100)
    assert len(with_other["labels"]) == 2 * c and int(with_other["labels"].max()) == c - 1
    # panoptic datasets: only things
    things = instance_inference(cls, masks, has_no_object=False, topk=100, thing_classes={0})
    assert set(things["labels"].tolist()) == {0}


def test_panoptic_output_scores_with_the_projects_pq() -> None:
    """The (ids, segments_info) pair goes straight into common.metrics' official-equivalent PQ."""
    from common.metrics.panoptic_metric import COCOPanopticQuality

    cls, masks = _case()
    pred = panoptic_inference(cls, masks, {0}, has_no_object=True)
    gt_ids = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2]])
    gt = {"panoptic": gt_ids, "segments_info": [{"id": 1, "category_id": 0, "iscrowd": 0},
                                                {"id": 2, "category_id": 1, "iscrowd": 0}]}
    metric = COCOPanopticQuality(3, [True, False, False])
    metric.update([pred], [gt])
    res = metric.compute()
    assert res["pq_th"] == 100.0
    torch.testing.assert_close(res["sq_st"], torch.tensor(100.0 * 7 / 8))  # stuff: 7 of 8 pixels, one VOID
