"""MaskCLIP (maskclip/mask_tokens.py): raw class-name scores / 0.01, "other" in training only, only RMA trains."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.models import load_clip
from maskclip.losses import MaskCLIPCriterion
from maskclip.mask_tokens import MaskCLIP

NAMES = ["red circle", "blue square", "green triangle"]


def _model() -> MaskCLIP:
    torch.manual_seed(0)
    clip, tokenizer, _ = load_clip("shapes-clip-tiny", None)   # random weights, 64 px, 8 px patches, 4 blocks
    return MaskCLIP(clip, tokenizer, NAMES, rma_blocks=(1, 3))


def test_scores_are_cosines_to_bare_names_over_the_temperature_and_other_only_in_training() -> None:
    model = _model()
    images, masks = torch.randn(2, 3, 64, 64), torch.randn(2, 5, 16, 16)   # masks resized to the image
    model.eval()
    with torch.no_grad():
        out = model(images, masks)
        emb = model.vit(images, masks).embeddings
        text = F.normalize(model.clip.encode_text(model.text.tokenizer(NAMES)), dim=-1)
    assert out["pred_logits"].shape == (2, 5, 3) and out["pred_masks"].shape == (2, 5, 64, 64)
    torch.testing.assert_close(out["pred_logits"], emb @ text.t() / 0.01, atol=1e-4, rtol=1e-5)
    assert len(out["aux_outputs"]) == 1
    model.train()
    assert not model.clip.training
    with torch.no_grad():
        train_logits = model(images, masks)["pred_logits"]
        other = F.normalize(model.clip.encode_text(model.text.tokenizer(["other"])), dim=-1)
    assert train_logits.shape == (2, 5, 4)                         # "other" appended last
    torch.testing.assert_close(train_logits[..., 3], (emb @ other.t() / 0.01)[..., 0], atol=1e-4, rtol=1e-5)
    model.set_class_names(["sky", "grass"])                         # another vocabulary at evaluation
    model.eval()
    with torch.no_grad():
        assert model(images, masks)["pred_logits"].shape == (2, 5, 2)


def test_a_training_step_moves_only_rma_and_the_clip_is_saved_once() -> None:
    model = _model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("vit.rma.") for n in trainable)
    keys = model.state_dict().keys()
    assert not any(k.startswith("vit.visual.") for k in keys) and any(k.startswith("clip.visual.") for k in keys)
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    rma_before = {k: v.clone() for k, v in model.vit.rma.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    gt = torch.zeros(2, 64, 64)
    gt[:, :, :32] = 1
    targets = [{"labels": torch.tensor([0, 2]), "masks": torch.stack([gt[0], 1 - gt[0]])}] * 2
    losses = MaskCLIPCriterion(num_points=64)(model(torch.randn(2, 3, 64, 64), torch.randn(2, 4, 64, 64)), targets)
    losses["loss"].backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.clip.state_dict().items())
    assert any(not torch.equal(rma_before[k], v) for k, v in model.vit.rma.state_dict().items())
