"""Metrics shared by the papers: dense-prediction metrics and the multi-task Δm (``common.metrics.dense``)."""

from common.metrics.dense import SALIENCY_THRESHOLDS, NormalsMetrics, SaliencyMetrics, SemSegMIoU, delta_m

__all__ = ["SALIENCY_THRESHOLDS", "NormalsMetrics", "SaliencyMetrics", "SemSegMIoU", "delta_m"]
