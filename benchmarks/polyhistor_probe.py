"""Per-pixel linear probe of a frozen Swin on the four PASCAL-Context tasks, beside the trivial row.

``python -m benchmarks.polyhistor_probe [--root DIR | --size PX --num-objects LO HI ...] [--pretrained NAME|none]``

What the frozen features of ``shapes-swin-tiny`` hold for dense prediction: the four stage maps (32 + 64 + 128 + 256
channels) are bilinearly upsampled to stride 4 and concatenated, a 1x1 convolution per task (linear in the features)
maps them to the task's outputs, and the logits are upsampled to the image as the SegFormer decoders do. Each task
is trained alone with its table loss (AdamW, full-batch features computed once), and scored by the table's metrics
(:func:`polyhistor.module._task_metrics`) on the val split; the trivial row (:mod:`polyhistor.trivial`) is printed
beside it. ``--pretrained none`` probes a random initialisation of the same architecture (what pretraining buys).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("semseg", "human_parts", "sal", "normals")


def _datamodule(args: argparse.Namespace) -> Any:
    from common.data.pascal_context import PascalContextMTDataModule

    synth = {"num_train": args.num_train, "num_val": args.num_val, "size": args.size,
             "num_objects": list(args.num_objects), "person_prob": args.person_prob}
    if args.shapes:
        synth["shapes"] = list(args.shapes)
    if args.object_scale != 1.0:
        synth["object_scale"] = args.object_scale
    return PascalContextMTDataModule(root=args.root, image_size=args.size, batch_size=16, num_workers=0,
                                     synth_if_missing=True, synth_options=synth, augment=False)


@torch.no_grad()
def _features(swin: nn.Module, loader: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stride-4 concatenated stage maps (N, C, H/4, W/4) and the stacked targets of every batch."""
    from common.peft.swin import swin_stage_features

    feats, targets = [], {}
    for b in loader:
        maps = swin_stage_features(swin, b["image"])
        size = maps[0].shape[-2:]
        feats.append(torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], 1))
        for k in (*TASKS, "normals_mask"):
            targets.setdefault(k, []).append(b[k])
    return torch.cat(feats), {k: torch.cat(v) for k, v in targets.items()}


def probe_task(task: str, train: tuple[torch.Tensor, dict], val: tuple[torch.Tensor, dict], outputs: int,
               steps: int, lr: float, batch: int = 16, seed: int = 0) -> dict[str, float]:
    """Train a 1x1 conv on frozen features for ``task`` and return its val metrics (the table's)."""
    from polyhistor.losses import task_loss
    from polyhistor.module import _task_metrics

    torch.manual_seed(seed)
    x, y = train
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    x = (x - mean) / std
    head = nn.Conv2d(x.shape[1], outputs, 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    size = y[task].shape[-2:]
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,))
        pred = F.interpolate(head(x[idx]), size=size, mode="bilinear", align_corners=False)
        loss = task_loss(task, pred, {k: v[idx] for k, v in y.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step + 1) / steps)).item())
    metric = _task_metrics(task, outputs, 255)
    xv, yv = val
    with torch.no_grad():
        for i in range(0, xv.shape[0], batch):
            pred = F.interpolate(head((xv[i:i + batch] - mean) / std), size=size, mode="bilinear",
                                 align_corners=False)
            if task == "normals":
                metric.update(pred, yv["normals"][i:i + batch], yv["normals_mask"][i:i + batch])
            else:
                metric.update(pred, yv[task][i:i + batch])
    out = metric.compute()
    return {k: float(v) for k, v in (out if isinstance(out, dict) else {"mIoU": out}).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="a PASCAL_MT folder (default: a ShapesWorld one under outputs/data)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--num-train", type=int, default=200)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--num-objects", type=int, nargs=2, default=(1, 3))
    p.add_argument("--person-prob", type=float, default=0.5)
    p.add_argument("--shapes", nargs="+", default=None, help="shape kinds drawn (default: all)")
    p.add_argument("--object-scale", type=float, default=1.0, help="shape sizes times this (default 1.0)")
    p.add_argument("--backbone", default="shapes-swin-tiny")
    p.add_argument("--pretrained", default="shapes-swin-tiny", help="'none': random init of the same architecture")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny tensors: 1 is fastest)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.root is None:
        from common.paths import data_dir

        args.root = str(data_dir() / f"pascal-context-{args.size}px-o{args.num_objects[0]}{args.num_objects[1]}"
                                     f"-p{args.person_prob:g}-n{args.num_train}"
                                     + (f"-{'-'.join(args.shapes)}" if args.shapes else "")
                                     + (f"-x{args.object_scale:g}" if args.object_scale != 1.0 else ""))
    from common.models import build_timm
    from polyhistor.trivial import trivial_metrics

    t0 = time.time()
    dm = _datamodule(args)
    dm.prepare_data()
    dm.setup("fit")
    info = dm.info
    swin = build_timm(args.backbone, None if args.pretrained == "none" else args.pretrained, num_classes=0,
                      img_size=(args.size, args.size)).eval()
    train, val = _features(swin, dm.train_dataloader()), _features(swin, dm.val_dataloader())
    trivial = trivial_metrics(dm.val_dataloader, TASKS, info["num_classes"])
    main_metric = {"semseg": "mIoU", "human_parts": "mIoU", "sal": "mIoU", "normals": "mean"}
    results: dict[str, Any] = {"args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                                        if k != "json"}, "trivial": {}, "probe": {}}
    print(f"features {tuple(train[0].shape)} in {time.time() - t0:.0f} s; probe {args.steps} steps per task",
          flush=True)
    for t in TASKS:
        m = probe_task(t, train, val, info["num_classes"][t], args.steps, args.lr)
        key = f"{t}/{main_metric[t]}"
        results["trivial"][t], results["probe"][t] = trivial[key], m[main_metric[t]]
        print(f"{t:12s} {main_metric[t]:5s} trivial {trivial[key]:7.2f}  probe {m[main_metric[t]]:7.2f}", flush=True)
    print(f"total {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
