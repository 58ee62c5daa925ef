"""The ``trivial`` row of the Polyhistor table: the constant predictor of each task, scored by the rows' own metrics.

Where zero skill lies on a split, so that a reader of the table can tell learning from the trivial solution:

* semseg and human parts: every pixel background (class 0), scored by the same :class:`SemSegMIoU` as the rows
  (mIoU over the classes present; parts over images with people only);
* saliency: the constant probability that the saliency metric scores best. Every threshold of the metric lies in
  (0.2, 0.9), so a constant probability is binarised to "every pixel salient" or "no pixel salient"; both are
  scored and the better one is kept (``sal_constant`` says which: 1.0 or 0.0). The mean saliency of the split is
  one of these two (all salient when it is above 0.2, none below), so this is never worse than the mean;
* normals: the mean of the split's valid target normals, L2-normalised (the constant that minimises the squared
  error; the mean angle is scored as for the rows).

Two passes over the batches (the first for the mean normal), so a large split is never held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from polyhistor.module import _task_metrics

__all__ = ["trivial_metrics", "trivial_metrics_of_datamodule"]

_LOGIT = 30.0  # a constant probability of 1 (or 0) as a logit: sigmoid(30) = 1 - 1e-13


def trivial_metrics(batches: Callable[[], Iterable[dict[str, Any]]], tasks: Iterable[str],
                    outputs: dict[str, int], ignore_index: int = 255) -> dict[str, float]:
    """Metrics of the constant predictor of every task over ``batches()`` (called once per pass).

    Args:
        batches: returns a fresh iterable of collated batches (the keys of ``PascalContextMTDataModule``:
            ``semseg``, ``human_parts`` (B, H, W), ``sal`` (B, H, W) in {0, 1, ignore}, ``normals`` (B, 3, H, W)
            and ``normals_mask`` (B, H, W)).
        tasks: the tasks to score.
        outputs: output channels per task (semseg 21, human_parts 7, sal 1, normals 3).
        ignore_index: the label value left out (255).

    Returns:
        every metric the rows log, as ``<task>/<metric>`` (semseg/human_parts ``mIoU``; sal ``mIoU``, ``maxF``;
        normals ``mean``, ``median``, ...), plus ``sal_constant`` (the probability kept, 1.0 or 0.0) and
        ``normals_constant_{x,y,z}`` (the mean normal).
    """
    tasks = list(tasks)
    out: dict[str, float] = {}
    mean_normal = None
    if "normals" in tasks:
        total = torch.zeros(3, dtype=torch.float64)
        for b in batches():
            n, m = b["normals"].double(), b["normals_mask"].bool()
            total += n.permute(0, 2, 3, 1)[m].sum(0)
        if float(total.norm()) == 0.0:
            raise ValueError("trivial_metrics: the split has no valid normal (polyhistor/trivial.py)")
        mean_normal = total / total.norm()
        out.update({f"normals_constant_{a}": float(v) for a, v in zip("xyz", mean_normal, strict=True)})
    metrics = {t: _task_metrics(t, outputs[t], ignore_index) for t in tasks}
    sal_none = _task_metrics("sal", 1, ignore_index) if "sal" in tasks else None
    for b in batches():
        for t in tasks:
            target = b[t]
            if t in ("semseg", "human_parts"):
                metrics[t].update(torch.zeros_like(target), target)
            elif t == "sal":
                metrics[t].update(torch.full(target.shape, _LOGIT), target)  # every pixel salient
                sal_none.update(torch.full(target.shape, -_LOGIT), target)  # no pixel salient
            elif t == "normals":
                pred = mean_normal.view(1, 3, 1, 1).expand_as(target).to(target.dtype)
                metrics[t].update(pred, target, b["normals_mask"])
    for t in tasks:
        res = metrics[t].compute()
        if t == "sal":
            none = sal_none.compute()
            keep_all = float(res["mIoU"]) >= float(none["mIoU"])
            res = res if keep_all else none
            out["sal_constant"] = 1.0 if keep_all else 0.0
        res = res if isinstance(res, dict) else {"mIoU": res}
        out.update({f"{t}/{k}": float(v) for k, v in res.items()})
    return out


def trivial_metrics_of_datamodule(dm: Any, split: str = "val") -> dict[str, float]:
    """:func:`trivial_metrics` on the ``val`` (or ``test``) loader of a ``PascalContextMTDataModule``."""
    dm.prepare_data()
    dm.setup("validate" if split == "val" else "test")
    info = dm.info
    loader = dm.val_dataloader if split == "val" else dm.test_dataloader
    return trivial_metrics(loader, info["tasks"], info["num_classes"], int(info.get("ignore_index", 255)))
