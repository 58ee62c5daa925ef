"""The LightningModule: trains on ShapesWorld PASCAL_MT batches, logs per-task metrics and Δm, and the configs."""

import lightning.pytorch as pl
import pytest
import torch
import yaml

from common.data.pascal_context import PascalContextMTDataModule
from common.metrics.dense import delta_m
from polyhistor.configs.generate import expected_files
from polyhistor.methods import METHODS
from polyhistor.module import PolyhistorModule


@pytest.fixture(scope="session")
def pascal_root(tmp_path_factory):
    from common.data.synth.pascal_mt import write_pascal_mt

    root = tmp_path_factory.mktemp("pascal_mt")
    write_pascal_mt(root, num_train=6, num_val=4, size=32, progress=False)
    return root


def _fit(module, dm, steps=2):
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    return trainer


def test_fit_logs_every_task_metric_and_delta_m(pascal_root):
    dm = PascalContextMTDataModule(root=str(pascal_root), image_size=32, batch_size=4)
    baseline = {"semseg": 20.0, "human_parts": 10.0, "sal": 30.0, "normals": 40.0}
    module = PolyhistorModule(method="polyhistor_lite", pretrained=None, decoder_embed_dim=8,
                              single_task_baseline=baseline, data_info=dm.info)
    m = _fit(module, dm).callback_metrics
    for key in ("train/loss_semseg", "train/loss_normals", "val/loss", "val/semseg/mIoU", "val/human_parts/mIoU",
                "val/sal/mIoU", "val/sal/maxF", "val/normals/mean", "val/normals/median"):
        assert key in m and torch.isfinite(m[key]), key
    main = {"semseg": float(m["val/semseg/mIoU"]), "human_parts": float(m["val/human_parts/mIoU"]),
            "sal": float(m["val/sal/mIoU"]), "normals": float(m["val/normals/mean"])}
    assert float(m["val/delta_m"]) == pytest.approx(delta_m(main, baseline, ("normals",)), abs=1e-4)


def test_single_task_needs_one_task_and_trains_only_it(pascal_root):
    dm = PascalContextMTDataModule(root=str(pascal_root), image_size=32, batch_size=4, tasks=["sal"])
    with pytest.raises(ValueError, match="one task per run"):
        PolyhistorModule(method="single_task", tasks=["sal", "semseg"], pretrained=None, data_info=dm.info)
    module = PolyhistorModule(method="single_task", pretrained=None, decoder_embed_dim=8, data_info=dm.info)
    assert module.tasks == ["sal"]
    m = _fit(module, dm).callback_metrics
    assert "val/sal/mIoU" in m and "val/semseg/mIoU" not in m and "val/delta_m" not in m


def test_generated_configs_are_in_sync_and_cover_every_row():
    files = expected_files()
    for path, text in files.items():
        assert path.is_file() and path.read_text() == text, f"{path} is stale: run python -m polyhistor.configs.generate"
    for preset in ("smoke", "tiny", "paper"):
        methods = {yaml.safe_load(t)["model"]["init_args"]["method"] for p, t in files.items() if p.parent.name == preset}
        assert methods == set(METHODS)


def test_backbone_lr_scale_applies_to_the_swin_weights_only():
    info = {"tasks": ["sal"], "num_classes": {"sal": 1}, "image_size": [32, 32]}
    module = PolyhistorModule(method="mtl_full_ft", pretrained=None, decoder_embed_dim=8, lr=1e-2,
                              backbone_lr_scale=0.1, data_info=info)
    opt = module.configure_optimizers()["optimizer"]
    swin = {id(p) for p in module.net.encoder.swin.parameters()}
    for group in opt.param_groups:
        inside = {id(p) in swin for p in group["params"]}
        assert len(inside) == 1
        assert group["lr"] == pytest.approx(1e-3 if inside.pop() else 1e-2)
        assert group["weight_decay"] == (module.weight_decay if group["params"][0].ndim >= 2 else 0.0)


@pytest.mark.parametrize("method", ["adapter", "lora", "bitfit", "polyhistor"])
def test_peft_lr_scale_applies_to_the_encoder_side_peft_weights_only(method):
    """Adapters / LoRA / BitFit deltas / hypernetworks at lr x peft_lr_scale (generators also x their own scale), the
    decoders at lr; the default (1.0) leaves one lr for all."""
    info = {"tasks": ["semseg", "sal"], "image_size": (32, 32)}
    module = PolyhistorModule(method=method, pretrained=None, decoder_embed_dim=8, lr=1e-2, peft_lr_scale=0.1,
                              generator_lr_scale=0.5, data_info=info)
    enc = {id(p) for p in module.net.encoder.parameters() if p.requires_grad}
    gen = {id(p) for p in module.net.encoder.generator_parameters()}
    dec = {id(p) for p in module.net.decoders.parameters()}
    assert enc and dec
    for group in module.configure_optimizers()["optimizer"].param_groups:
        ids = {id(p) for p in group["params"]}
        want = 5e-4 if ids <= gen else 1e-3 if ids <= enc else 1e-2
        assert ids <= gen or ids <= enc - gen or ids <= dec
        assert group["lr"] == pytest.approx(want), (method, want)
    plain = PolyhistorModule(method=method, pretrained=None, decoder_embed_dim=8, lr=1e-2, data_info=info)
    assert {g["lr"] for g in plain.configure_optimizers()["optimizer"].param_groups} == {1e-2}
    with pytest.raises(ValueError, match="peft_lr_scale"):
        PolyhistorModule(method=method, pretrained=None, peft_lr_scale=0.0, data_info=info)


@pytest.mark.parametrize("method", ["hyperformer", "polyhistor"])
def test_generator_lr_scale_auto_makes_generated_adapters_move_like_plain_ones(method):
    """Adam's first step moves each weight by ~lr; a generated entry then moves by lr * scale * ||c||_1.
    With the "auto" scale that is ~lr, as for a directly learned adapter weight (Hyperformer's full generator;
    at init only its generated layer norm gets a gradient, the norm's weight being zero)."""
    torch.manual_seed(0)
    info = {"tasks": ["semseg", "sal"], "image_size": (32, 32)}
    module = PolyhistorModule(method=method, pretrained=None, decoder_embed_dim=8, lr=1e-3, weight_decay=0.0,
                              generator_lr_scale="auto", data_info=info)
    opt = module.configure_optimizers()["optimizer"]
    gen = {id(p) for p in module.net.encoder.generator_parameters()}
    assert gen and all(id(p) in gen for n, p in module.net.encoder.bank.named_parameters()
                       if not n.startswith("projector."))
    lrs = {g["lr"] for g in opt.param_groups if any(id(p) in gen for p in g["params"])}
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(1e-3 * (torch.pi / 2) ** 0.5 / 64)
    if method != "hyperformer":
        return
    bank = module.net.encoder.bank
    before = [w.norm_bias.detach().clone() for w in bank(0)]
    module.net(torch.randn(2, 3, 32, 32))["semseg"].square().mean().backward()
    for g in opt.param_groups:  # only the generators step, so the change comes from them alone
        if not any(id(p) in gen for p in g["params"]):
            g["lr"] = 0.0
    opt.step()
    with torch.no_grad():
        moved = torch.cat([(w.norm_bias - b).abs().flatten() for w, b in zip(bank(0), before)])
    assert 0.5e-3 < float(moved.mean()) < 1.5e-3, float(moved.mean())


@pytest.mark.parametrize("method", ["hyperformer", "polyhistor", "polyhistor_lite"])
def test_paper_presets_train_the_generators_at_the_papers_learning_rate(method):
    files = {p.parent.name: yaml.safe_load(t) for p, t in expected_files().items() if p.stem == method}
    assert "generator_lr_scale" not in files["paper"]["model"]["init_args"]
    assert files["tiny"]["model"]["init_args"]["generator_lr_scale"] == "auto"  # this project's tiny-scale knob
    info = {"tasks": ["semseg", "sal"], "image_size": (32, 32)}
    module = PolyhistorModule(method=method, pretrained=None, decoder_embed_dim=8, lr=1e-3, data_info=info)
    gen = {id(p) for p in module.net.encoder.generator_parameters()}
    opt = module.configure_optimizers()["optimizer"]
    assert gen and {g["lr"] for g in opt.param_groups if any(id(p) in gen for p in g["params"])} == {1e-3}


def test_peft_lr_scale_is_a_tiny_knob_of_the_adapter_and_lora_rows_only():
    """The paper presets train every weight at the recipe's one lr; only the tiny / smoke Adapter (0.1) and LoRA
    (0.3) rows scale their per-task encoder weights (polyhistor/README.md, "Training choices")."""
    scaled = {(p.parent.name, p.stem): yaml.safe_load(t)["model"]["init_args"].get("peft_lr_scale")
              for p, t in expected_files().items()}
    assert {k: v for k, v in scaled.items() if v is not None} == {
        ("tiny", "adapter"): 0.1, ("smoke", "adapter"): 0.1, ("tiny", "lora"): 0.3, ("smoke", "lora"): 0.3}
