"""An in-memory video datamodule with the real batch layout of common.data.video_dataset, for the tests of the video
papers (ST-Adapter, ViFi-CLIP)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from common.data.base import CVDataModule


class RandomVideos(Dataset):
    """Random clips with the batch layout of common.data.video_dataset: training items ``(T, 3, S, S)``,
    evaluation items ``(V, T, 3, S, S)``."""

    def __init__(self, n: int, num_classes: int, frames: int, size: int, views: int | None, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        shape = (n, frames, 3, size, size) if views is None else (n, views, frames, 3, size, size)
        self.video = torch.randn(shape, generator=g)
        self.label = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "label": self.label[i], "index": torch.tensor(i)}


class RandomVideoDataModule(CVDataModule):
    """Tiny random video data (64 px for shapes-clip-tiny), 3 evaluation views."""

    def __init__(self, num_train: int = 8, num_val: int = 6, num_classes: int = 3, frames: int = 2,
                 size: int = 64, views: int = 3, batch_size: int = 4, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.num_classes = num_classes
        self.train_set = RandomVideos(num_train, num_classes, frames, size, None, seed=0)
        self.val_set = RandomVideos(num_val, num_classes, frames, size, views, seed=1)

    @property
    def info(self) -> dict:
        return {"num_classes": self.num_classes, "class_names": [f"class {i}" for i in range(self.num_classes)]}

    def train_dataloader(self):
        return self.train_loader(self.train_set)

    def val_dataloader(self):
        return self.eval_loader(self.val_set)

    def test_dataloader(self):
        return self.eval_loader(self.val_set)
