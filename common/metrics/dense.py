"""Dense-prediction metrics of the PASCAL-Context multi-task benchmark, and the multi-task Δm.

All metrics are :class:`torchmetrics.Metric` subclasses whose states are sums (``dist_reduce_fx="sum"``), so a
DDP evaluation (where every sample goes to exactly one rank) gives exactly the numbers of one process.

Conventions follow the ASTMT / MTI-Net / Multi-Task-Learning-PyTorch lineage (the evaluation code MTLoRA and the
Polyhistor table use):

* :class:`SemSegMIoU`: per-class IoU ``TP / (TP + FP + FN)`` from one dataset-level confusion matrix, pixels whose
  target is ``ignore_index`` (255) left out; mIoU is the mean over *all* classes (a class never seen in target nor
  prediction counts as IoU 0, as in the lineage; ``ignore_absent=True`` averages over present classes instead).
  Used for semantic segmentation (21 classes) and human parts (7 classes, ``foreground_images_only=True``: images
  whose target holds no part pixel, i.e. images without people, are left out).
* :class:`SaliencyMetrics`: for each threshold in ``linspace(0.2, 0.9, 15)`` the per-image Jaccard index (1 when both
  masks are empty) and per-image precision / recall; mIoU is the maximum over thresholds of the mean Jaccard, maxF
  the maximum over thresholds of the F-measure of the mean precision and mean recall. The F-measure uses
  ``beta2 = 0.3`` (the saliency literature's maxF); the lineage code reports F1 (``beta2=1.0``).
* :class:`NormalsMetrics`: angle between the L2-normalised prediction and target in degrees, over valid pixels:
  mean, median, RMSE and the percentage of pixels within 11.25, 22.5 and 30 degrees. The median comes from a
  histogram of errors (bin width ``median_bin_deg``, linear interpolation inside the bin): exact across processes,
  accurate to the bin width.
* :func:`delta_m`: the average relative gain over a single-task baseline, with the sign flipped for metrics where
  lower is better (Maninis et al. 2019; the Polyhistor / MTLoRA tables).

mIoU, maxF and the "within" percentages are returned in percent, angles in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import torch
from torchmetrics import Metric

from common.ops import channel_norm

__all__ = ["SemSegMIoU", "SaliencyMetrics", "NormalsMetrics", "delta_m", "SALIENCY_THRESHOLDS"]

#: thresholds at which saliency maps are binarised (the lineage's ``np.linspace(0.2, 0.9, 15)``)
SALIENCY_THRESHOLDS: tuple[float, ...] = tuple(torch.linspace(0.2, 0.9, 15, dtype=torch.float64).tolist())


def _as_label_map(preds: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """Class indices from logits (B, C, H, W) or from a label map (B, H, W) of the target's shape."""
    if preds.ndim == target.ndim + 1:
        preds = preds.argmax(dim=1)
    if preds.shape != target.shape:
        raise ValueError(
            f"{name}: prediction shape {tuple(preds.shape)} does not match target shape {tuple(target.shape)}; "
            "pass logits (B, C, H, W) or labels (B, H, W) at the target's resolution"
        )
    return preds


class SemSegMIoU(Metric):
    """Mean intersection-over-union from a dataset-level confusion matrix.

    Args:
        num_classes: number of classes (21 for PASCAL-Context semseg, 7 for human parts).
        ignore_index: target value that is left out (255).
        foreground_images_only: leave out images whose target has no pixel of a class other than 0 (background) --
            for human parts, where images without people carry no part annotation.
        ignore_absent: average the IoU over classes that occur in target or prediction only (default: over all
            classes, an absent class counting as 0, as the lineage does).

    ``update(preds, target)``: ``preds`` logits (B, C, H, W) or labels (B, H, W); ``target`` labels (B, H, W).
    ``compute()`` returns the mIoU in percent; :meth:`per_class_iou` the per-class IoU (fractions).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        foreground_images_only: bool = False,
        ignore_absent: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"SemSegMIoU: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.foreground_images_only = bool(foreground_images_only)
        self.ignore_absent = bool(ignore_absent)
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("num_images", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate the confusion matrix (rows: target class, columns: predicted class) of one batch."""
        preds = _as_label_map(preds, target, type(self).__name__).long()
        target = target.long()
        if target.ndim == 2:
            preds, target = preds[None], target[None]
        valid = target != self.ignore_index
        if self.foreground_images_only:
            fg = (valid & (target > 0)).flatten(1).any(dim=1)
            valid &= fg.view(-1, *([1] * (target.ndim - 1)))
            self.num_images += fg.sum()
        else:
            self.num_images += target.shape[0]
        t = target[valid]
        p = preds[valid]
        if t.numel() and (int(t.max()) >= self.num_classes or int(t.min()) < 0):
            raise ValueError(
                f"SemSegMIoU: target holds class {int(t.max())} (or negative) outside 0..{self.num_classes - 1} "
                f"that is not the ignore index {self.ignore_index}"
            )
        p = p.clamp(0, self.num_classes - 1)  # a prediction outside the classes counts as a wrong class
        idx = t * self.num_classes + p
        self.confmat += torch.bincount(idx, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def per_class_iou(self) -> torch.Tensor:
        """IoU of each class as a fraction, ``TP / max(TP + FP + FN, 1e-8)`` (0 for an absent class)."""
        cm = self.confmat.double()
        tp = cm.diag()
        denom = cm.sum(0) + cm.sum(1) - tp
        return tp / denom.clamp_min(1e-8)

    def compute(self) -> torch.Tensor:
        """Mean IoU in percent."""
        cm = self.confmat.double()
        iou = self.per_class_iou()
        if self.ignore_absent:
            present = (cm.sum(0) + cm.sum(1)) > 0
            if not bool(present.any()):
                return torch.zeros((), dtype=torch.float64)
            return 100.0 * iou[present].mean()
        return 100.0 * iou.mean()


class SaliencyMetrics(Metric):
    """Saliency mIoU (max over thresholds of the mean per-image Jaccard) and maxF.

    Args:
        thresholds: binarisation thresholds of the predicted probability (default ``linspace(0.2, 0.9, 15)``).
        beta2: β² of the F-measure (0.3, the saliency literature; 1.0 gives the lineage's F1).
        ignore_index: target value left out (pixels padded by augmentation). An image with no valid pixel is
            left out altogether.
        from_logits: apply a sigmoid to ``preds`` first.

    ``update(preds, target)``: ``preds`` probabilities in [0, 1] (or logits), shape (B, H, W) or (B, 1, H, W);
    ``target`` {0, 1, ignore} of shape (B, H, W) or (B, 1, H, W). ``compute()`` returns
    ``{"mIoU": %, "maxF": %}``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        thresholds: Collection[float] = SALIENCY_THRESHOLDS,
        beta2: float = 0.3,
        ignore_index: int = 255,
        from_logits: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        thr = torch.as_tensor(list(thresholds), dtype=torch.float64)
        if thr.ndim != 1 or thr.numel() == 0:
            raise ValueError("SaliencyMetrics: thresholds must be a non-empty list of numbers")
        self.register_buffer("thresholds", thr, persistent=False)
        self.beta2 = float(beta2)
        self.ignore_index = int(ignore_index)
        self.from_logits = bool(from_logits)
        n = thr.numel()
        self.add_state("jaccard_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("precision_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("recall_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add the per-image Jaccard / precision / recall at every threshold of one batch."""
        if preds.ndim == 4:
            preds = preds[:, 0]
        if target.ndim == 4:
            target = target[:, 0]
        if preds.ndim == 2:
            preds, target = preds[None], target[None]
        if preds.shape != target.shape:
            raise ValueError(
                f"SaliencyMetrics: prediction shape {tuple(preds.shape)} does not match target {tuple(target.shape)}"
            )
        probs = preds.double()
        if self.from_logits:
            probs = probs.sigmoid()
        valid = (target != self.ignore_index).flatten(1)  # (B, P)
        keep = valid.any(dim=1)
        if not bool(keep.any()):
            return
        valid = valid[keep]
        gt = (target.flatten(1)[keep] == 1) & valid  # (B, P)
        probs = probs.flatten(1)[keep]
        thr = self.thresholds.to(probs.device)
        pred = (probs[:, None, :] > thr[None, :, None]) & valid[:, None, :]  # (B, T, P)
        gt3 = gt[:, None, :]
        tp = (pred & gt3).sum(-1).double()
        fp = (pred & ~gt3).sum(-1).double()
        fn = (~pred & gt3).sum(-1).double()
        union = tp + fp + fn
        jaccard = torch.where(union > 0, tp / union.clamp_min(1.0), torch.ones_like(tp))
        self.jaccard_sum += jaccard.sum(0)
        self.precision_sum += (tp / (tp + fp + 1e-12)).sum(0)
        self.recall_sum += (tp / (tp + fn + 1e-12)).sum(0)
        self.num_images += keep.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"mIoU": ..., "maxF": ...}`` in percent (0 before any valid image)."""
        n = self.num_images.double().clamp_min(1.0)
        miou = self.jaccard_sum / n
        prec = self.precision_sum / n
        rec = self.recall_sum / n
        f = (1.0 + self.beta2) * prec * rec / (self.beta2 * prec + rec + 1e-12)
        return {"mIoU": 100.0 * miou.max(), "maxF": 100.0 * f.max()}


class NormalsMetrics(Metric):
    """Angular error of surface normals in degrees over valid pixels.

    Args:
        median_bin_deg: histogram bin width (degrees) for the median.
        thresholds: angles (degrees) for the "within" percentages; reported as ``within_<t>``.
        ignore_value: target value that marks an invalid pixel in every channel (the lineage writes 255).

    ``update(preds, target, mask=None)``: ``preds`` and ``target`` (B, 3, H, W); a pixel is valid where ``mask``
    (B, H, W) is true if given, else where the target is neither the zero vector nor ``ignore_value``. Both vectors
    are L2-normalised before the angle is taken. ``compute()`` returns ``{"mean", "median", "rmse",
    "within_11.25", "within_22.5", "within_30"}`` (degrees; percent).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        median_bin_deg: float = 0.01,
        thresholds: Collection[float] = (11.25, 22.5, 30.0),
        ignore_value: float = 255.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if median_bin_deg <= 0:
            raise ValueError(f"NormalsMetrics: median_bin_deg must be > 0, got {median_bin_deg}")
        self.bin_deg = float(median_bin_deg)
        self.num_bins = int(math.ceil(180.0 / self.bin_deg))
        self.threshold_values = tuple(float(t) for t in thresholds)
        self.ignore_value = float(ignore_value)
        self.add_state("error_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sq_error_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "within", default=torch.zeros(len(self.threshold_values), dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("hist", default=torch.zeros(self.num_bins, dtype=torch.long), dist_reduce_fx="sum")

    @staticmethod
    def _format(t: float) -> str:
        return f"within_{t:g}"

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Accumulate the angular errors of the valid pixels of one batch."""
        if preds.ndim == 3:
            preds, target = preds[None], target[None]
            mask = None if mask is None else mask[None]
        if preds.shape != target.shape or preds.shape[1] != 3:
            raise ValueError(
                f"NormalsMetrics: preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be (B, 3, H, W)"
            )
        p = preds.double()
        g = target.double()
        if mask is None:
            valid = ((g * g).sum(dim=1) > 0) & ~(g == self.ignore_value).all(dim=1)
        else:
            if mask.shape != (g.shape[0], *g.shape[2:]):
                raise ValueError(f"NormalsMetrics: mask {tuple(mask.shape)} must be (B, H, W) of the target")
            valid = mask.bool()
        p = p / channel_norm(p, dim=1, keepdim=True)
        g = g / channel_norm(g, dim=1, keepdim=True)
        cos = (p * g).sum(dim=1).clamp(-1.0, 1.0)
        err = torch.rad2deg(torch.acos(cos))[valid]
        if err.numel() == 0:
            return
        self.error_sum += err.sum()
        self.sq_error_sum += (err * err).sum()
        self.count += err.numel()
        for i, t in enumerate(self.threshold_values):
            self.within[i] += (err < t).sum()
        bins = (err / self.bin_deg).floor().long().clamp(0, self.num_bins - 1)
        self.hist += torch.bincount(bins, minlength=self.num_bins)

    def _order_statistic(self, cdf: torch.Tensor, r: int) -> float:
        """Estimate of the r-th smallest error (1-based): inside its bin, values are taken as evenly spread."""
        k = int(torch.searchsorted(cdf, torch.tensor([r], dtype=cdf.dtype))[0])
        k = min(k, self.num_bins - 1)
        before = int(cdf[k - 1]) if k > 0 else 0
        in_bin = max(int(self.hist[k]), 1)
        return (k + (r - before - 0.5) / in_bin) * self.bin_deg

    def _median(self) -> torch.Tensor:
        """Median as numpy defines it (mean of the two middle values for an even count), to the bin width."""
        n = int(self.count)
        cdf = torch.cumsum(self.hist, 0)
        if n % 2:
            med = self._order_statistic(cdf, (n + 1) // 2)
        else:
            med = 0.5 * (self._order_statistic(cdf, n // 2) + self._order_statistic(cdf, n // 2 + 1))
        return torch.tensor(med, dtype=torch.float64)

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean / median / RMSE angle (degrees) and within-threshold percentages (NaN before any valid pixel)."""
        n = int(self.count)
        if n == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64)
            out = {"mean": nan, "median": nan, "rmse": nan}
            out.update({self._format(t): nan for t in self.threshold_values})
            return out
        out = {
            "mean": self.error_sum / n,
            "median": self._median(),
            "rmse": torch.sqrt(self.sq_error_sum / n),
        }
        for i, t in enumerate(self.threshold_values):
            out[self._format(t)] = 100.0 * self.within[i].double() / n
        return out


def delta_m(
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    lower_is_better: Collection[str] | Mapping[str, bool] = ("normals",),
) -> float:
    """Multi-task performance Δm in percent against a single-task baseline.

    ``Δm = 100/T · Σ_t (-1)^{l_t} (M_t - M_b,t) / M_b,t`` with ``l_t = 1`` where lower is better (e.g. the normals
    mean angle error). The tasks are the keys of ``metrics``; each must be in ``baseline`` (extra baseline keys
    are ignored).

    Args:
        metrics: task (or metric) name -> value of the multi-task model.
        baseline: the same names -> single-task values.
        lower_is_better: names for which a lower value is better (a collection, or a name -> bool mapping).

    Example: the Polyhistor row against single-task fine-tuning on PASCAL-Context gives +2.34.
    """
    if not metrics:
        raise ValueError("delta_m: no metrics given")
    missing = [k for k in metrics if k not in baseline]
    if missing:
        raise KeyError(f"delta_m: baseline has no value for {missing}; baseline keys are {sorted(baseline)}")
    if isinstance(lower_is_better, Mapping):
        lower = {k for k, v in lower_is_better.items() if v}
    else:
        lower = set(lower_is_better)
    total = 0.0
    for name, value in metrics.items():
        base = float(baseline[name])
        if base == 0.0:
            raise ValueError(f"delta_m: baseline value of {name!r} is 0, the relative change is undefined")
        rel = (float(value) - base) / base
        total += -rel if name in lower else rel
    return 100.0 * total / len(metrics)
