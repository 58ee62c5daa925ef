"""MLflow tracking for cvinw: where the store is, how runs are named and tagged, parent/child runs.

Defaults: a SQLite store ``sqlite:///<repo>/mlflow.db`` with artifacts under ``<repo>/mlartifacts/``.
``MLFLOW_TRACKING_URI`` overrides the store (an ``http://`` ``mlflow server`` URL works the same; the server then
decides where artifacts go); ``CVINW_ARTIFACTS`` overrides the local artifact root.

A reproduce driver makes one parent run per table and one child run per row::

    parent = start_parent_run("polyhistor", "reproduce-tiny", tags={"preset": "tiny"})
    # each row: python -m polyhistor fit --config ... --run.parent_run_id <parent>
    end_run(parent, "FINISHED")

The Lightning logger that writes a run (:class:`common.loggers.CVMLFlowLogger`) lives in ``common/loggers.py``; this
module needs no Lightning.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.paths import project_root

#: characters MLflow accepts in metric and param names
_NAME_OK = re.compile(r"[^A-Za-z0-9_/. -]+")
PARENT_TAG = "mlflow.parentRunId"


def tracking_uri() -> str:
    """The MLflow tracking URI: $MLFLOW_TRACKING_URI, else ``sqlite:///<repo>/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def is_local_store(uri: str | None = None) -> bool:
    """True for a file/SQLite store on this machine (artifacts then go to the local artifact root)."""
    uri = uri or tracking_uri()
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def artifact_root() -> Path:
    """Local artifact root for experiments created on a local store ($CVINW_ARTIFACTS or <repo>/mlartifacts)."""
    env = os.environ.get("CVINW_ARTIFACTS")
    return Path(env).expanduser().resolve() if env else project_root() / "mlartifacts"


def artifact_location(experiment: str) -> str | None:
    """Artifact location to give a new experiment: a file URI under :func:`artifact_root` for local stores,
    ``None`` (the server's choice) for a tracking server."""
    if not is_local_store():
        return None
    return (artifact_root() / sanitize_name(experiment).replace(" ", "_")).as_uri()


_READY_STORES: set[str] = set()


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path("/" + path.lstrip("/")) if uri.startswith("sqlite:////") else Path(path)


def ensure_store(uri: str | None = None) -> str:
    """Create (migrate) a SQLite store once, under an exclusive file lock, and return its URI.

    MLflow builds a new SQLite store's tables on first use; two processes that both find the file empty race and
    one dies with ``table experiments already exists`` (two rows of a reproduction, or two users' runs, started
    at once on a fresh store). Other stores are returned unchanged.
    """
    uri = uri or tracking_uri()
    db = _sqlite_path(uri)
    if db is None or uri in _READY_STORES:
        return uri
    import fcntl

    from mlflow.tracking import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(uri).search_experiments(max_results=1)  # creates / migrates the tables
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY_STORES.add(uri)
    return uri


def client():
    """An ``MlflowClient`` on :func:`tracking_uri` (a fresh SQLite store is created safely first)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(ensure_store())


def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """Experiment id for ``name`` on the store ``uri`` (default :func:`tracking_uri`), created (with the project's
    artifact location) if missing; safe when another process creates it at the same time."""
    return _get_or_create_on(ensure_store(uri), name)


def _get_or_create_on(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location(name))
    except Exception:  # another process created it in between (UNIQUE name): use theirs
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def runs_url(base_url: str, experiment_id: str) -> str:
    """The MLflow UI address of an experiment's runs list (``base_url`` e.g. ``http://127.0.0.1:5000``)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI address of one run."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def sanitize_name(name: str) -> str:
    """Make ``name`` a legal MLflow metric/param key (only [A-Za-z0-9_/. -])."""
    return _NAME_OK.sub("_", name)


def git_sha(short: bool = False) -> str:
    """The checkout's HEAD commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    root = project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short" if short else "HEAD", *(["HEAD"] if short else [])],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _shown_path(value: str) -> str:
    """An argument that names an existing file or folder, as a command run from the project root would write it:
    relative to the root when inside it, else absolute; any other value unchanged."""
    try:
        path = Path(value).expanduser()
        if not value or not path.exists():
            return value
        path = path.resolve()
        root = project_root().resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    except (OSError, ValueError):
        return value


def command_line(args: list[str] | None = None, prog: str | None = None) -> str:
    """The command that started this run as a user pastes it in a shell at the project root: ``prog`` (default
    ``python -m <the __main__ package>``) and ``args`` (default ``sys.argv[1:]``), with paths of existing files
    written relative to the project root (``--config polyhistor/configs/smoke/lora.yaml``) and shell-quoted."""
    if prog is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        prog = "python -m " + spec.name.removesuffix(".__main__") if spec else sys.argv[0]
    shown = []
    for arg in (sys.argv[1:] if args is None else args):
        key, eq, value = arg.partition("=")
        shown.append(f"{key}={_shown_path(value)}" if eq and arg.startswith("--") else _shown_path(arg))
    return " ".join([prog, *map(shlex.quote, shown)])


def base_tags(paper: str | None = None, setting: str | None = None, preset: str | None = None,
              extra: Mapping[str, Any] | None = None, args: list[str] | None = None,
              prog: str | None = None) -> dict[str, str]:
    """The tags every cvinw run carries: paper, setting, preset, git sha, command line (+ ``extra``)."""
    tags = {"paper": paper or "unknown", "setting": setting or "custom", "preset": preset or "custom",
            "git_sha": git_sha(), "command": command_line(args, prog)[:5000]}
    for k, v in (extra or {}).items():
        tags[str(k)] = str(v)
    return tags


def start_parent_run(experiment: str, run_name: str, tags: Mapping[str, Any] | None = None) -> str:
    """Create a RUNNING parent run (e.g. one per reproduced table) and return its id."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    c = client()
    exp_id = get_or_create_experiment(experiment)
    all_tags = base_tags(paper=experiment, extra=tags)
    all_tags[MLFLOW_RUN_NAME] = run_name
    all_tags["cvinw.role"] = "parent"
    return c.create_run(exp_id, tags=all_tags, run_name=run_name).info.run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark a run FINISHED / FAILED / KILLED."""
    client().set_terminated(run_id, status)


def child_runs(parent_run_id: str) -> list:
    """The child runs of ``parent_run_id`` (any experiment of the parent)."""
    c = client()
    parent = c.get_run(parent_run_id)
    return c.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                         max_results=10_000)


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Upload a local file or folder to the run."""
    path = Path(path)
    c = client()
    if path.is_dir():
        c.log_artifacts(run_id, str(path), artifact_path)
    else:
        c.log_artifact(run_id, str(path), artifact_path)


def flatten(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested dicts/lists into ``a.b.c`` keys (lists of scalars stay one value)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        elif isinstance(value, list | tuple) and value and any(isinstance(v, Mapping) for v in value):
            for i, v in enumerate(value):
                if isinstance(v, Mapping):
                    out.update(flatten(v, f"{name}{sep}{i}", sep))
                else:
                    out[f"{name}{sep}{i}"] = v
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Run naming: one rule for the CLI and the reproduce drivers, so that ``--ckpt_path last`` finds every run of a setting
# ---------------------------------------------------------------------------------------------------------------------
PRESETS = ("smoke", "tiny", "paper")
#: the time stamp of a run name (``<setting slug>-<stamp>[-<n>]``)
RUN_STAMP = "%Y%m%d-%H%M%S"


def config_setting(config_paths: Sequence[str | Path]) -> str:
    """The setting a config file stands for: its path under the last ``configs/`` folder without the suffix
    (``polyhistor/configs/smoke/lora.yaml`` -> ``smoke/lora``; the first such file of several), else the first
    file's stem, else ``custom``. The same whether a user or a reproduce driver launches the config."""
    paths = [Path(str(p)) for p in config_paths if p is not None]
    for p in paths:
        parts = p.resolve().parts
        if "configs" in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index("configs")
            return str(Path(*parts[i + 1:]).with_suffix(""))
    return paths[0].stem if paths else "custom"


def setting_preset(setting: str) -> str:
    """The preset named in a setting (``smoke/lora`` -> ``smoke``), else ``custom``."""
    words = re.split(r"[/_\-.]", setting)
    return next((p for p in PRESETS if p in words), "custom")


def run_slug(setting: str) -> str:
    """A setting as a folder-name prefix (``smoke/lora`` -> ``smoke_lora``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", setting)


def new_run_name(setting: str, runs_root: Path | None = None, when: float | None = None, claim: bool = False) -> str:
    """The default name of a new run of ``setting``: ``<slug>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3`` ... when that
    folder already exists under ``runs_root`` (two runs started in the same second).

    ``claim``: create the run's folder under ``runs_root`` as the name is chosen (an atomic ``mkdir``), so that two
    processes started in the same second never get the same name (and one folder of checkpoints)."""
    import time

    base = f"{run_slug(setting)}-{time.strftime(RUN_STAMP, time.localtime(when))}"
    name, n = base, 1
    while runs_root is not None:
        if claim:
            runs_root.mkdir(parents=True, exist_ok=True)
            try:
                (runs_root / name).mkdir()
                break
            except FileExistsError:
                pass
        elif not (runs_root / name).exists():
            break
        n += 1
        name = f"{base}-{n}"
    return name


def runs_of_setting(runs_root: Path, setting: str) -> list[Path]:
    """The run folders under ``runs_root`` named by :func:`new_run_name` for ``setting`` (not those of a setting
    whose name merely starts the same), oldest first by modification time."""
    pattern = re.compile(re.escape(run_slug(setting)) + r"-\d{8}-\d{6}(-\d+)?")
    if not runs_root.is_dir():
        return []
    found = [p for p in runs_root.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def latest_checkpoint(runs_root: Path, setting: str, filename: str = "last.ckpt") -> Path | None:
    """The most recently written ``filename`` among the runs of ``setting`` under ``runs_root`` (None if none)."""
    files = [p / filename for p in runs_of_setting(runs_root, setting) if (p / filename).is_file()]
    return max(files, key=lambda f: f.stat().st_mtime) if files else None
