"""ConvAdapterModule: a Lightning fit on random images trains exactly the declared parameters (optimiser groups),
leaves the frozen backbone's weights as they were, validates; frozen BatchNorm statistics policy."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from conv_adapter.module import ConvAdapterModule


class RandomImages(Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 64, 64, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "label": self.y[i]}


def module(**kw) -> ConvAdapterModule:
    torch.manual_seed(0)
    return ConvAdapterModule(backbone="shapes-resnet-tiny", pretrained=None, num_classes=3, gamma=4, **kw)


def test_fit_trains_the_declared_parameters_only(tmp_path):
    m = module(method="conv_parallel", lr=1e-2)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu", devices=1)
    loader = DataLoader(RandomImages(), batch_size=4)
    trainer.fit(m, loader, loader)
    opt = trainer.optimizers[0]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    declared = {n for n, p in m.named_parameters() if p.requires_grad}
    assert in_opt == {id(p) for n, p in m.named_parameters() if n in declared}
    assert declared == {n for n in declared if n.startswith(("model.peft.", "model.head.", "model.extra_norm."))}
    after = dict(m.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in before.items() if n not in declared)
    assert any(not torch.equal(after[n], before[n]) for n in declared if n.endswith("alpha"))
    assert "val/acc1" in trainer.callback_metrics


def test_frozen_batchnorm_statistics_policy():
    official = module(method="conv_parallel").train()
    assert all(b.training for b in official.model.backbone.modules() if isinstance(b, nn.BatchNorm2d))
    kept = module(method="conv_parallel", frozen_bn="eval").train()
    assert not any(b.training for b in kept.model.backbone.modules() if isinstance(b, nn.BatchNorm2d))
    assert kept.model.extra_norm.training  # the trained norm keeps learning its statistics
    full = module(method="full_finetune", frozen_bn="eval").train()
    assert all(b.training for b in full.model.backbone.modules() if isinstance(b, nn.BatchNorm2d))
