"""The ViFi-CLIP LightningModule: the official optimiser/schedule, Mixup/CutMix soft targets, class names that follow
the data between fit and validate, multi-view softmax averaging."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from vificlip.mixup import VideoMixup, smooth_one_hot
from vificlip.module import ViFiCLIPModule


def make_dm(random_video_dm, names: list[str], **kw):
    class Named(random_video_dm):
        @property
        def info(self) -> dict:
            return {"num_classes": len(names), "class_names": list(names)}

    return Named(num_classes=len(names), **kw)


def module(names: list[str], **kw) -> ViFiCLIPModule:
    torch.manual_seed(0)
    args = dict(arch="shapes-clip-tiny", pretrained=None, warmup_epochs=0, lr=1e-3)
    args.update(kw)
    return ViFiCLIPModule(data_info={"num_classes": len(names), "class_names": names}, **args)


def trainer(**kw) -> pl.Trainer:
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return pl.Trainer(**{**opts, **kw})


def test_class_names_follow_the_data_from_fit_to_validate(random_video_dm) -> None:
    fit_names = ["red circle", "blue square", "green triangle"]
    m = module(fit_names, method="text_ft")
    trainer(limit_train_batches=1, limit_val_batches=1).fit(m, datamodule=make_dm(random_video_dm, fit_names))
    assert m.model.class_names == tuple(fit_names)
    other = ["yellow star", "purple hexagon", "orange circle", "white square", "black triangle"]
    out = trainer().validate(m, datamodule=make_dm(random_video_dm, other))
    assert m.model.class_names == tuple(other)
    assert m.eval_metrics["val"]["acc1"].num_classes == 5 and out[0]["val/count"] == 6
    assert m.model.text_head.prompts() == [[f"a photo of a {n}." for n in other]]
    with torch.no_grad():
        assert m.forward_logits(torch.randn(2, 2, 3, 64, 64)).shape == (2, 5)


def test_official_optimiser_and_schedule(random_video_dm) -> None:
    m = module(["a", "b", "c"], method="vificlip", lr=2.2e-5, warmup_epochs=1)
    t = trainer(max_epochs=4)
    t.fit(m, datamodule=make_dm(random_video_dm, ["a", "b", "c"]))  # 2 steps per epoch, 8 in all
    opt = t.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW)
    for g in opt.param_groups:  # weight decay on every trainable tensor, as the official optimiser
        assert g["betas"] == (0.9, 0.98) and g["eps"] == 1e-8 and g["weight_decay"] == 0.001
    trained = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert trained == sum(p.numel() for p in m.parameters() if p.requires_grad)
    # cosine to lr/100 at the last step
    assert opt.param_groups[0]["lr"] == pytest.approx(2.2e-5 / 100, rel=1e-3)


def test_zero_shot_refuses_to_fit() -> None:
    m = module(["a", "b"], method="zero_shot")
    assert not any(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match="trains nothing"):
        m.configure_optimizers()


def test_mixup_cutmix_soft_targets() -> None:
    t = smooth_one_hot(torch.tensor([1, 0]), 4, 0.1)
    torch.testing.assert_close(t, torch.tensor([[0.025, 0.925, 0.025, 0.025], [0.925, 0.025, 0.025, 0.025]]))
    video, labels = torch.rand(4, 3, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    mixed, target = VideoMixup(4, mixup_alpha=0.8, cutmix_alpha=0.0, smoothing=0.1)(video, labels)
    torch.testing.assert_close(target.sum(-1), torch.ones(4))
    # class 0 gets lam, its partner (the reversed batch: 3) 1 - lam: t0 - t3 = 0.9 (2 lam - 1)
    lam = (float(target[0, 0] - target[0, 3]) / 0.9 + 1) / 2
    torch.testing.assert_close(mixed[0], lam * video[0] + (1 - lam) * video[3])
    # CutMix: one box, the same in every frame, and lam = the area kept
    torch.manual_seed(1)
    mixed, target = VideoMixup(4, mixup_alpha=0.0, cutmix_alpha=1.0, smoothing=0.0)(video, labels)
    from_partner = (mixed[0] == video[3]) & (mixed[0] != video[0])
    assert torch.equal(from_partner[0], from_partner[1]) and torch.equal(from_partner[0], from_partner[2])
    area = float(from_partner[0, 0].float().mean())
    assert target[0, 0] == pytest.approx(1 - area, abs=1e-6) and target[0, 3] == pytest.approx(area, abs=1e-6)


def test_blended_training_step_uses_soft_target_cross_entropy() -> None:
    m = module(["a", "b", "c"], method="image_ft")
    logits = torch.randn(2, 3)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    loss = m.classification_loss(logits, {"label": soft})["ce"]
    torch.testing.assert_close(loss, -(soft * F.log_softmax(logits, -1)).sum(-1).mean())
    hard = m.classification_loss(logits, {"label": torch.tensor([0, 2])})["ce"]
    torch.testing.assert_close(hard, F.cross_entropy(logits, torch.tensor([0, 2]), label_smoothing=0.1))


def test_multi_view_softmax_is_averaged() -> None:
    m = module(["a", "b", "c"], method="zero_shot").eval()
    views = torch.randn(2, 3, 2, 3, 64, 64)  # (B, V, T, 3, H, W)
    with torch.no_grad():
        probs = m(views)
        per_view = torch.stack([m.forward_logits(views[:, v]).softmax(-1) for v in range(3)], 1).mean(1)
    torch.testing.assert_close(probs, per_view, atol=1e-5, rtol=1e-5)


class GradsAtStep(pl.Callback):
    """The gradients the optimiser sees at each step (after accumulation)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("method", ["vificlip", "text_ft"])
def test_class_embeddings_computed_once_per_optimiser_step_under_accumulation(random_video_dm, method) -> None:
    """3 micro-batches per optimiser step, 2 steps: one text pass per step instead of one per micro-batch, and the
    same accumulated gradients of every tensor as the per-micro-batch text pass."""
    names = ["red circle", "blue square", "green triangle"]
    runs = {}
    for once in (True, False):
        pl.seed_everything(0)
        m = module(names, method=method, text_once_per_step=once, mixup_alpha=0.0, cutmix_alpha=0.0)
        grads = GradsAtStep()
        t = trainer(accumulate_grad_batches=3, limit_val_batches=0, callbacks=[grads])
        t.fit(m, datamodule=make_dm(random_video_dm, names, num_train=12, batch_size=2))  # 6 micro-batches
        assert t.global_step == 2 and len(grads.steps) == 2
        runs[once] = (m.text_passes, grads.steps)
    assert runs[True][0] == 2 and runs[False][0] == 6
    trained = {n for n, p in m.named_parameters() if p.requires_grad}
    text = {n for n in trained if n.startswith("model.clip.transformer.")}
    for once_step, ref_step in zip(runs[True][1], runs[False][1]):
        assert set(once_step) == set(ref_step) == trained and text
        assert all(ref_step[n].abs().sum() > 0 for n in text)  # the text tower receives a gradient
        for n, g in ref_step.items():
            # float32 summation order only: within 1e-5 of the tensor's largest gradient
            torch.testing.assert_close(once_step[n], g, rtol=0, atol=1e-5 * float(g.abs().max()) + 1e-8, msg=n)
