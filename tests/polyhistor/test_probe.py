"""The per-pixel linear probe of benchmarks/polyhistor_probe.py learns what its features hold, and only that."""

import torch

from benchmarks.polyhistor_probe import probe_task


def _split(n: int, informative: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 3, (n, 4, 4), generator=g)  # 3 classes in 4x4 blocks of a 16x16 image
    target = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    feats = torch.nn.functional.one_hot(coarse, 3).permute(0, 3, 1, 2).float()
    if not informative:
        feats = torch.randn(feats.shape, generator=g)
    feats = feats + 0.05 * torch.randn(feats.shape, generator=g)
    return feats, {"semseg": target}


def test_probe_reads_a_linearly_coded_label_and_not_noise():
    good = probe_task("semseg", _split(32, True, 0), _split(16, True, 1), outputs=3, steps=150, lr=5e-2)
    noise = probe_task("semseg", _split(32, False, 0), _split(16, False, 1), outputs=3, steps=150, lr=5e-2)
    assert good["mIoU"] > 90.0
    assert noise["mIoU"] < 50.0
