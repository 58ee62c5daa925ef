"""common.module: the base classes carry optimiser, schedule, evaluation plumbing and per-stage class names."""

from __future__ import annotations

import zlib
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.module import ClassificationModule


def _prototype(name: str, dim: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(dim, generator=g)


class _Images(Dataset):
    """Images whose mean colour pattern is the class prototype (so a prototype classifier can read it)."""

    def __init__(self, names: list[str], n: int, views: int = 0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.label = torch.arange(n) % len(names)
        protos = torch.stack([_prototype(c) for c in names])
        base = protos[self.label].view(n, 3, 2, 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
        self.x = base + 0.3 * torch.randn(n, 3, 4, 4, generator=g)
        if views:
            self.x = torch.stack([self.x + 0.1 * torch.randn(n, 3, 4, 4, generator=g) for _ in range(views)], 1)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.x[i], "label": self.label[i]}


class _DM(pl.LightningDataModule):
    def __init__(self, names: list[str], views: int = 0) -> None:
        super().__init__()
        self.names, self.views, self.batch_size = names, views, 8

    @property
    def info(self) -> dict[str, Any]:
        return {"num_classes": len(self.names), "class_names": list(self.names)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.names, 32), batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.names, 20, views=self.views, seed=1), batch_size=8)

    test_dataloader = val_dataloader


class _PrototypeClassifier(ClassificationModule):
    """Cosine to fixed per-name prototypes through a trainable linear map: the number of classes follows the data,
    like a CLIP text head."""

    def __init__(self, data_info: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(data_info, **kw)
        self.proj = nn.Linear(12, 12)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(12))
            self.proj.bias.zero_()
        self.changes: list[tuple[str, list[str]]] = []
        self._set_prototypes()

    def _set_prototypes(self) -> None:
        self.register_buffer("protos", torch.stack([_prototype(c) for c in self.data_info["class_names"]]),
                             persistent=False)

    def on_data_info_changed(self, old: dict[str, Any], stage: str) -> None:
        super().on_data_info_changed(old, stage)
        self.changes.append((stage, list(self.data_info["class_names"])))
        self._set_prototypes()

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        f = nn.functional.normalize(self.proj(x.flatten(1)[:, ::4]), dim=-1)
        return 10 * f @ nn.functional.normalize(self.protos, dim=-1).T


def _trainer(**kw: Any) -> pl.Trainer:
    opts = dict(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    opts.update(kw)
    return pl.Trainer(**opts)


def test_fit_logs_classification_metrics_and_the_schedule_runs_to_zero() -> None:
    dm = _DM(["red square", "blue circle", "green star"])
    model = _PrototypeClassifier(dm.info, lr=0.05, weight_decay=0.1, warmup_epochs=1)
    trainer = _trainer()
    trainer.fit(model, datamodule=dm)
    m = trainer.callback_metrics
    for k in ("val/acc1", "val/acc5", "val/mean_class_acc", "val/loss", "val/count", "train/acc1", "train/loss"):
        assert k in m, k
    assert float(m["val/count"]) == 20 and float(m["val/acc1"]) > 0.9  # the prototypes are readable
    opt = trainer.optimizers[0]
    by_name = {n: g for g in opt.param_groups for n in g["names"]}
    assert by_name["proj.weight"]["weight_decay"] == 0.1 and by_name["proj.bias"]["weight_decay"] == 0.0
    # 4 steps per epoch, 2 epochs, 1 epoch (4 steps) of warm-up: the last lr of the cosine is 0
    assert trainer.global_step == 8 and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_class_names_are_re_read_at_each_stage_and_metrics_follow_their_number() -> None:
    fit_dm = _DM(["red square", "blue circle", "green star"])
    model = _PrototypeClassifier(fit_dm.info, lr=0.01)
    _trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=fit_dm)
    assert model.changes == []
    novel = ["yellow hexagon", "purple triangle", "orange ring", "white cross", "black moon"]
    out = _trainer().validate(model, datamodule=_DM(novel), verbose=False)[0]
    assert model.changes == [("validate", novel)]
    assert model.data_info["num_classes"] == 5 and model.eval_metrics["val"]["acc1"].num_classes == 5
    assert out["val/count"] == 20 and out["val/acc1"] > 0.5  # zero-shot on the new names (chance: 0.2)


def test_multi_view_evaluation_and_empty_batches() -> None:
    dm = _DM(["a", "b", "c"], views=3)
    model = _PrototypeClassifier(dm.info).eval()
    batch = next(iter(dm.val_dataloader()))
    probs = model.view_probabilities(batch["image"])
    per_view = torch.stack([model.forward_logits(batch["image"][:, v]).softmax(-1) for v in range(3)], 1).mean(1)
    assert torch.allclose(probs, per_view, atol=1e-6)
    empty = {"image": torch.zeros(0, 3, 3, 4, 4), "label": torch.zeros(0, dtype=torch.long)}
    model.validation_step(empty, 0)
    assert not model.eval_metrics["val"]["count"].update_called
    assert model.training_step({"image": torch.zeros(0, 3, 4, 4), "label": torch.zeros(0, dtype=torch.long)},
                               0) is None
    model.validation_step(batch, 0)
    values = model.compute_eval_metrics("val")
    assert values["val/count"] == 8 and "val/confusion" not in values
    assert model._confusion is not None and int(model._confusion.sum()) == 8


def test_confusion_picture_reaches_the_mlflow_run(tmp_path) -> None:
    from lightning.pytorch.loggers import MLFlowLogger
    from PIL import Image

    logger = MLFlowLogger(experiment_name="module-test", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                          artifact_location=str(tmp_path / "artifacts"))
    dm = _DM(["a", "b", "c"])
    model = _PrototypeClassifier(dm.info, lr=0.01)
    _trainer(max_epochs=2, logger=logger).fit(model, datamodule=dm)
    files = [f.path for f in logger.experiment.list_artifacts(logger.run_id, "confusion")]
    assert files == ["confusion/val_epoch1.png"]  # only after the last validation of the fit
    local = logger.experiment.download_artifacts(logger.run_id, files[0], str(tmp_path))
    assert Image.open(local).size[0] > 100


def test_num_classes_is_required() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        _PrototypeClassifier.__mro__[1](None)
