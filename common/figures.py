"""Pictures a person would rather look at than read, and their upload to the run's MLflow store (rank 0 only)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["confusion_figure", "log_figure"]


def confusion_figure(matrix: torch.Tensor, class_names: list[str], title: str) -> Any:
    """A row-normalised confusion matrix (rows: true class) as a matplotlib figure (cells annotated up to 20
    classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.double()
    m = (m / m.sum(1, keepdim=True).clamp_min(1)).cpu().numpy()
    k = len(m)
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * k, 2 + 0.4 * k), dpi=100)
    ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
    ticks = list(range(k))
    names = class_names if len(class_names) == k else [str(i) for i in ticks]
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j] >= 0.005:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def log_figure(trainer: pl.Trainer, fig: Any, artifact_file: str) -> bool:
    """Upload ``fig`` to every MLflow logger of ``trainer`` (rank 0) and close it; False when none took it.

    An artifact-store problem is reported and swallowed: a picture must never end a run.
    """
    import matplotlib.pyplot as plt

    from lightning.pytorch.loggers import MLFlowLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)] if trainer.is_global_zero else []
    try:
        for lg in loggers:
            lg.experiment.log_figure(lg.run_id, fig, artifact_file)
    except Exception as err:  # noqa: BLE001 - see docstring
        rank_zero_info(f"[figures] could not upload {artifact_file}: {err}")
        return False
    finally:
        plt.close(fig)
    return bool(loggers)
