"""The ST-Adapter LightningModule: optimiser recipe, what trains, multi-view evaluation (tiny CLIP, random init)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from common.module import average_view_softmax
from st_adapter.module import STAdapterModule

TINY = dict(arch="shapes-clip-tiny", pretrained=None, adapter_width=16)


def _trainer(**kw) -> pl.Trainer:
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    opts.update(kw)
    return pl.Trainer(**opts)


def test_lr_scales_with_global_batch_and_biases_have_no_decay(random_video_dm) -> None:
    dm = random_video_dm(num_train=8, batch_size=2)
    model = STAdapterModule(data_info=dm.info, weight_decay=0.05, warmup_epochs=1, **TINY)
    trainer = _trainer(max_epochs=2, accumulate_grad_batches=2, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert model.effective_lr == pytest.approx(1e-3 * (2 * 1 * 2) / 256)
    opt = trainer.optimizers[0]
    decay, no_decay = sorted(opt.param_groups, key=lambda g: -g["weight_decay"])
    assert len(opt.param_groups) == 2
    names = {id(p): n for n, p in model.model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") for p in no_decay["params"])
    assert all(not names[id(p)].endswith("bias") for p in decay["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    # 8 samples / batch 2 / accumulate 2 = 2 steps per epoch, 4 in all, 2 of warm-up (1/3, 2/3 of the lr), then the
    # cosine from the full lr at step 2: the lr after the last step is the cosine value at step 4 of 4, i.e. 0
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 4 and sched.last_epoch == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_backbone_lr_scale_slows_only_the_backbone() -> None:
    """Full fine-tuning with ``backbone_lr_scale``: the CLIP backbone's weights at lr x scale, the head at lr."""
    model = STAdapterModule(method="full_finetune", num_classes=5, lr=1e-2, backbone_lr_scale=0.1, **TINY)
    opt = model.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.model.named_parameters())
    assert lr_of[id(names["head.weight"])] == lr_of[id(names["head.bias"])] == pytest.approx(1e-2)
    backbone = [p for n, p in names.items() if n.startswith("backbone.") and p.requires_grad]
    assert backbone and all(lr_of[id(p)] == pytest.approx(1e-3) for p in backbone)
    assert set(lr_of) == {id(p) for p in model.parameters() if p.requires_grad}
    # ST-Adapter: nothing of the (frozen) backbone trains, so the scale changes no group
    st = STAdapterModule(method="st_adapter", num_classes=5, lr=1e-2, backbone_lr_scale=0.1, **TINY)
    assert all(g["lr"] == pytest.approx(1e-2) for g in st.configure_optimizers()["optimizer"].param_groups)


@pytest.mark.parametrize("method", ["st_adapter", "linear_probe", "full_finetune"])
def test_what_changes_in_training(method: str, random_video_dm) -> None:
    dm = random_video_dm(num_train=4, batch_size=4)
    torch.manual_seed(0)
    model = STAdapterModule(method=method, data_info=dm.info, lr=1e-2, warmup_epochs=0, **TINY)
    # non-zero adapter convolutions so that every adapter weight receives a gradient in the first step
    for ad in model.model.adapters.values():
        torch.nn.init.constant_(ad.conv.weight, 0.1)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    _trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=dm)
    changed = {n for n, p in model.model.named_parameters() if not torch.equal(p, before[n])}
    assert {n for n in changed if n.startswith("head.")} == {"head.weight", "head.bias"}
    adapters = {n for n in before if n.startswith("adapters.")}
    backbone = {n for n in before if n.startswith("backbone.") and n != "backbone.proj"}
    if method == "st_adapter":
        # the adapter before the last block's MLP only touches patch tokens, which never reach the CLS token
        # afterwards: it gets an exactly-zero gradient (so does the official 12x384's last adapter); AdamW's
        # decoupled weight decay still moves its weights, never its biases
        dead = {n for n in adapters if n.startswith("adapters.3_pre_mlp.")}
        assert adapters and adapters - dead <= changed and not changed & backbone
        assert not changed & {n for n in dead if n.endswith("bias")}
    elif method == "linear_probe":
        assert not adapters and not changed & backbone
    else:
        assert not adapters and backbone <= changed
    assert "backbone.proj" not in changed  # CLIP's projection is unused by the video head


def test_multi_view_evaluation_averages_softmax_over_views(random_video_dm) -> None:
    dm = random_video_dm(num_val=5, views=3, num_classes=4)
    model = STAdapterModule(data_info=dm.info, head_init_std=0.05, **TINY).eval()
    batch = {"video": dm.val_set.video[:5], "label": dm.val_set.label[:5]}
    with torch.no_grad():
        probs = model.view_probabilities(batch["video"])
        per_view = torch.stack([model.model(batch["video"][:, v]).softmax(-1) for v in range(3)], dim=1)
        logits_mean = torch.stack([model.model(batch["video"][:, v]) for v in range(3)], 1).mean(1).softmax(-1)
        model.validation_step(batch, 0)
    assert torch.allclose(probs, per_view.mean(dim=1), atol=1e-6)
    # softmax-then-mean differs from mean-then-softmax; check it on logits where the two are known to differ
    # (the tiny model's own outputs can saturate, which would make the comparison meaningless)
    two_views = torch.tensor([[8.0, 0.0], [0.0, 2.0]])
    expected = two_views.softmax(-1).mean(0, keepdim=True)
    assert torch.allclose(average_view_softmax(two_views, 2), expected, atol=1e-6)
    assert not torch.allclose(average_view_softmax(two_views, 2), two_views.mean(0, keepdim=True).softmax(-1),
                              atol=1e-3), "views must be averaged after the softmax"
    del logits_mean
    assert torch.allclose(probs.sum(-1), torch.ones(5))
    m = model.eval_metrics["val"]
    expected_acc = (probs.argmax(-1) == batch["label"]).float().mean()
    assert m["acc1"].compute() == pytest.approx(float(expected_acc))
    assert m["count"].compute() == 5
    nll = -probs[torch.arange(5), batch["label"]].log().mean()
    assert m["loss"].compute() == pytest.approx(float(nll), rel=1e-5)
    # the same function the module uses, on flattened views
    flat = torch.cat([model.model(batch["video"][i]) for i in range(5)]).detach()
    assert torch.allclose(average_view_softmax(flat, 3), probs, atol=1e-6)


def test_empty_batch_is_skipped_and_num_classes_is_required(random_video_dm) -> None:
    dm = random_video_dm()
    model = STAdapterModule(data_info=dm.info, **TINY)
    empty = {"video": torch.zeros(0, 2, 3, 64, 64), "label": torch.zeros(0, dtype=torch.long)}
    assert model.training_step(empty, 0) is None
    with pytest.raises(ValueError, match="num_classes"):
        STAdapterModule(**TINY)
    with pytest.raises(ValueError, match="method"):
        STAdapterModule(method="lora", num_classes=3, **TINY)
