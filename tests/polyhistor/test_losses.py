import math

import torch
import torch.nn.functional as F

from polyhistor.losses import balanced_bce, masked_cross_entropy, normals_l1, weighted_losses


def test_cross_entropy_ignores_255_and_is_zero_without_valid_pixels():
    logits = torch.randn(2, 7, 4, 4, requires_grad=True)
    target = torch.randint(0, 7, (2, 4, 4))
    target[0] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(masked_cross_entropy(logits, target), expected)
    empty = masked_cross_entropy(logits, torch.full((2, 4, 4), 255))
    assert float(empty.detach()) == 0.0 and empty.requires_grad  # images without people: no NaN, still a graph
    empty.backward()


def test_balanced_bce_weights_each_class_by_the_other_ones_frequency():
    logits = torch.tensor([[[[2.0, -1.0, 0.5, 0.0]]]])  # (1, 1, 1, 4)
    target = torch.tensor([[[1, 0, 0, 255]]])
    per = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).float(), reduction="none")[0, 0]
    w = 2 / 3  # fraction of negatives among the 3 valid pixels
    expected = (w * per[0] + (1 - w) * (per[1] + per[2])) / 3
    assert math.isclose(float(balanced_bce(logits, target)), float(expected), rel_tol=1e-6)


def test_normals_l1_normalises_predictions_and_skips_invalid_pixels():
    target = torch.zeros(1, 3, 1, 2)
    target[0, 2] = 1.0  # both pixels point at the viewer
    pred = torch.zeros(1, 3, 1, 2)
    pred[0, 2, 0, 0] = 5.0  # right direction, wrong length: zero loss after normalisation
    pred[0, 0, 0, 1] = 1.0  # orthogonal: |1-0| + |0-0| + |0-1| = 2
    mask = torch.tensor([[[True, True]]])
    assert math.isclose(float(normals_l1(pred, target, mask)), 2 / 6, rel_tol=1e-6)
    assert float(normals_l1(pred, target, torch.tensor([[[True, False]]]))) == 0.0


def test_default_weights_are_the_lineages():
    batch = {"semseg": torch.zeros(1, 2, 2, dtype=torch.long), "normals": torch.zeros(1, 3, 2, 2)}
    batch["normals"][:, 2] = 1
    preds = {"semseg": torch.zeros(1, 21, 2, 2), "normals": torch.ones(1, 3, 2, 2)}
    terms = weighted_losses(preds, batch)
    assert math.isclose(float(terms["semseg"]), math.log(21), rel_tol=1e-5)
    unit = 1 / math.sqrt(3)
    assert math.isclose(float(terms["normals"]), 10 * (2 * unit + (1 - unit)) / 3, rel_tol=1e-5)
    assert math.isclose(float(weighted_losses(preds, batch, {"semseg": 0.5})["semseg"]), 0.5 * math.log(21), rel_tol=1e-5)


def test_losses_of_bf16_predictions_are_computed_in_float32():
    """A bf16 autocast forward (the tiny preset) gives bf16 predictions; the losses upcast them first, so each equals
    the float32 loss of the same (rounded) values, not a bf16 sum."""
    g = torch.Generator().manual_seed(0)
    batch = {"semseg": torch.randint(0, 21, (2, 16, 16), generator=g), "normals": torch.randn(2, 3, 16, 16, generator=g)}
    preds = {"semseg": torch.randn(2, 21, 16, 16, generator=g).to(torch.bfloat16),
             "normals": torch.randn(2, 3, 16, 16, generator=g).to(torch.bfloat16)}
    low = weighted_losses(preds, batch)
    ref = weighted_losses({t: p.float() for t, p in preds.items()}, batch)
    for t in preds:
        assert low[t].dtype == torch.float32
        assert float(low[t]) == float(ref[t])
