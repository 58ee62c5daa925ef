"""Metrics shared by the papers: dense-prediction metrics and Δm (``common.metrics.dense``), panoptic quality
(``common.metrics.panoptic``). Names are loaded lazily, so ``python -m common.metrics.panoptic`` starts fast."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SALIENCY_THRESHOLDS": "common.metrics.dense",
    "NormalsMetrics": "common.metrics.dense",
    "SaliencyMetrics": "common.metrics.dense",
    "SemSegMIoU": "common.metrics.dense",
    "delta_m": "common.metrics.dense",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'common.metrics' has no attribute {name!r}")
