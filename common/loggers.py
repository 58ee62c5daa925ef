"""The Lightning logger every cvinw run gets: :class:`CVMLFlowLogger` (MLflow, with the store defaults and helpers
of :mod:`common.tracking`)."""

from __future__ import annotations

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
    """Lightning's MLFlowLogger with cvinw's store defaults and resume-safe parameter logging.

    MLflow refuses to change a logged parameter ("Changing param values is not allowed"), which a resumed run
    would otherwise do (``ckpt_path`` differs, for one). Here a parameter already on the run is never logged
    again; when its new value differs, the new value goes to a ``resumed_param/<key>`` tag instead.
    """

    def __init__(self, experiment_name: str, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                 run_id: str | None = None, tracking_uri: str | None = None) -> None:
        uri = ensure_store(tracking_uri or default_tracking_uri())
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri,
                         tags=dict(tags or {}), artifact_location=artifact_location(experiment_name),
                         run_id=run_id, save_dir=None)
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
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.experiment.set_tag(self.run_id, k, str(v))

    @rank_zero_only
    def log_text(self, text: str, artifact_file: str) -> None:
        try:
            self.experiment.log_text(self.run_id, text, artifact_file)
        except Exception as err:  # an artifact store problem must not kill a training run
            rank_zero_warn(f"could not upload {artifact_file} to MLflow: {err}")
