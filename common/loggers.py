"""The Lightning logger every cvinw run gets: :class:`CVMLFlowLogger` (MLflow, with the store defaults and helpers
of :mod:`common.tracking`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from common.tracking import (
    artifact_location,
    ensure_store,
    flatten,
    get_or_create_experiment,
    sanitize_name,
)
from common.tracking import tracking_uri as default_tracking_uri

__all__ = ["CVMLFlowLogger"]


class CVMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with cvinw's store defaults and resume-safe parameter and metric logging.

    MLflow refuses to change a logged parameter ("Changing param values is not allowed"), which a resumed run
    would otherwise do (``ckpt_path`` differs, for one). Here a parameter already on the run is never logged
    again; when its new value differs, the new value goes to a ``resumed_param/<key>`` tag instead.

    A resumed run (``run_id`` given) replays what happened after its checkpoint: after a ``kill -9`` the rest of
    the interrupted epoch, and on every start the step-0 parameter counts. A metric step the run already holds is
    not logged again: each ``(key, step)`` is logged as many times as an uninterrupted run logs it (the values
    already in the store are kept).
    """

    def __init__(self, experiment_name: str, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                 run_id: str | None = None, tracking_uri: str | None = None) -> None:
        uri = ensure_store(tracking_uri or default_tracking_uri())
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri,
                         tags=dict(tags or {}), artifact_location=artifact_location(experiment_name),
                         run_id=run_id, save_dir=None)
        self._resumed = run_id is not None
        self._already_logged: Counter[tuple[str, int]] | None = None
        if run_id is None and rank_zero_only.rank == 0:
            # Lightning would create a missing experiment itself, without handling a concurrent creation
            self._experiment_id = get_or_create_experiment(experiment_name, uri)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:  # type: ignore[override]
        from argparse import Namespace

        from mlflow.entities import Param, RunTag

        if isinstance(params, Namespace):
            params = vars(params)
        flat = {sanitize_name(k): str(v)[:500] for k, v in flatten(dict(params)).items()}
        existing = self.experiment.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        changed = [RunTag(f"resumed_param/{k}"[:250], v) for k, v in flat.items() if k in existing and existing[k] != v]
        for i in range(0, len(new), 100):
            self.experiment.log_batch(run_id=self.run_id, params=new[i:i + 100])
        for i in range(0, len(changed), 100):
            self.experiment.log_batch(run_id=self.run_id, tags=changed[i:i + 100])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # type: ignore[override]
        if self._resumed:
            metrics = self._not_yet_logged(metrics, step or 0)
            if not metrics:
                return
        super().log_metrics(metrics, step)

    def _not_yet_logged(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        """``metrics`` less the ``(key, step)`` pairs the resumed run already holds (each consumed once)."""
        if self._already_logged is None:
            client, counts = self.experiment, Counter()
            for key in client.get_run(self.run_id).data.metrics:
                counts.update((key, m.step) for m in client.get_metric_history(self.run_id, key))
            self._already_logged = counts
        keep = {}
        for k, v in metrics.items():
            # the key as Lightning's MLFlowLogger writes it (prefix, then only [a-zA-Z0-9_/. -])
            name = re.sub("[^a-zA-Z0-9_/. -]+", "", f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}" if self._prefix else k)
            if self._already_logged[(name, step)] > 0:
                self._already_logged[(name, step)] -= 1
                continue
            keep[k] = v
        return keep

    @rank_zero_only
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.experiment.set_tag(self.run_id, k, str(v))

    @rank_zero_only
    def log_text(self, text: str, artifact_file: str) -> None:
        try:
            self.experiment.log_text(self.run_id, text, artifact_file)
        except Exception as err:  # an artifact store problem must not kill a training run
            rank_zero_warn(f"could not upload {artifact_file} to MLflow: {err}")
