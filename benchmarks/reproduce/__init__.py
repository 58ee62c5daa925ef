"""Reproduce a paper's table: one CLI training run per table row, tracked as children of one MLflow parent run.

A paper contributes ``benchmarks/reproduce/<paper>.py`` with

* ``make_plan(preset: str, data: str | None) -> Plan``: the rows to run (a config each) and a ``prepare`` step
  (build data / pretrained backbones once, before the first row);
* ``write_results(plan, results) -> str``: turn the finished rows into ``benchmarks/results/<paper>_<preset>.md``
  and ``.csv`` and return the table text to print (it may also log table-level metrics to the runs).

:func:`run_plan` does the rest: one parent run, rows in order with their position and an ETA, each row through
the paper's CLI (``fit --config ROW.yaml --run.parent_run_id PARENT --run.summary_path FILE``), in this process
(saves one framework start-up per row) or in a subprocess each (``isolate=True``). A row whose config (files +
overrides) is unchanged since it last finished is not trained again: its result is read back from the state
folder ``outputs/reproduce/<paper>/<preset>/``, so an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.paths import outputs_dir, project_root

#: environment variables the CLI uses to pass a run's identity to DDP children; cleared between in-process rows
_CLI_ENV = ("CVINW_RUN_NAME", "CVINW_MLFLOW_RUN_ID")


@dataclass
class Row:
    """One training run of the table.

    Attributes:
        key: unique id (state file name, run name suffix).
        label: what the progress lines call it.
        config: the row's YAML (relative to the project root or absolute).
        overrides: extra CLI arguments (e.g. ``--data.init_args.root=...``).
        cost: relative cost, for the ETA before any row has finished (1.0 = a typical row).
    """

    key: str
    label: str
    config: str
    overrides: list[str] = field(default_factory=list)
    cost: float = 1.0


@dataclass
class Plan:
    """What to run for one paper and preset."""

    paper: str
    preset: str
    rows: list[Row]
    cli_module: str
    experiment: str
    prepare: Callable[[], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RowResult:
    """The outcome of one row (also its state file)."""

    key: str
    status: str  # finished | failed
    config_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    trainable_params: int | None = None
    run_id: str | None = None
    seconds: float = 0.0
    reused: bool = False
    error: str | None = None


def state_dir(paper: str, preset: str) -> Path:
    """Where the rows' results of a reproduction are kept between invocations."""
    return outputs_dir() / "reproduce" / paper / preset


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def config_hash(row: Row) -> str:
    """Digest of what defines a row's run: its config file's text and the overrides."""
    h = hashlib.sha256()
    h.update(_resolve(row.config).read_bytes())
    for o in row.overrides:
        h.update(b"\0" + o.encode())
    return h.hexdigest()[:16]


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _load_state(path: Path) -> RowResult | None:
    try:
        return RowResult(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _parent_run(plan: Plan, sdir: Path) -> str:
    """The parent run recorded for this reproduction if it still exists in the store, else a new one."""
    from common import tracking

    record = sdir / "parent.json"
    if record.is_file():
        try:
            run_id = json.loads(record.read_text())["run_id"]
            tracking.client().get_run(run_id)
            tracking.client().update_run(run_id, status="RUNNING")
            return run_id
        except Exception:
            pass
    run_id = tracking.start_parent_run(
        plan.experiment, f"reproduce-{plan.paper}-{plan.preset}",
        tags={"preset": plan.preset, "setting": f"reproduce/{plan.preset}", "cvinw.reproduce": plan.paper})
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"run_id": run_id}))
    return run_id


def _cli_args(plan: Plan, row: Row, parent: str, summary: Path, run_name: str) -> list[str]:
    return ["fit", "--config", str(_resolve(row.config)), *row.overrides,
            "--run.parent_run_id", parent, "--run.summary_path", str(summary), "--run.name", run_name,
            "--run.experiment", plan.experiment, "--run.preset", plan.preset,
            "--run.setting", f"{plan.preset}/{row.key}"]


def _run_cli(plan: Plan, args: list[str], isolate: bool) -> None:
    if isolate:
        subprocess.run([sys.executable, "-m", plan.cli_module, *args], check=True, cwd=project_root())
        return
    import importlib

    for k in _CLI_ENV:
        os.environ.pop(k, None)
    cli = importlib.import_module("common.cli")
    argv = sys.argv
    sys.argv = [f"python -m {plan.cli_module}"]  # the CLI reads only `args`; this keeps its run tags right
    try:
        cli.main(args)
    except SystemExit as err:  # argument errors and the NaN guard exit
        if err.code not in (0, None):
            raise RuntimeError(f"the CLI exited with status {err.code}") from err
    finally:
        sys.argv = argv
        for k in _CLI_ENV:
            os.environ.pop(k, None)


def run_plan(plan: Plan, force: bool = False, isolate: bool = False,
             log: Callable[[str], None] = print) -> tuple[str, dict[str, RowResult]]:
    """Run (or reuse) every row of ``plan``; returns the parent run id and the results by row key."""
    from common import tracking

    sdir = state_dir(plan.paper, plan.preset)
    sdir.mkdir(parents=True, exist_ok=True)
    todo: list[tuple[Row, str]] = []
    results: dict[str, RowResult] = {}
    for row in plan.rows:
        h = config_hash(row)
        prev = _load_state(sdir / f"{row.key}.json")
        if not force and prev is not None and prev.status == "finished" and prev.config_hash == h:
            prev.reused = True
            results[row.key] = prev
        else:
            todo.append((row, h))
    log(f"[reproduce] {plan.paper} / {plan.preset}: {len(plan.rows)} rows, {len(results)} already done "
        f"with the same config, {len(todo)} to run (state in {sdir})")
    if todo and plan.prepare is not None:
        t0 = time.time()
        plan.prepare()
        log(f"[reproduce] prepared data and backbones in {_fmt_seconds(time.time() - t0)}")
    parent = _parent_run(plan, sdir)
    start = time.time()
    done_cost = 0.0
    total_cost = sum(r.cost for r, _ in todo)
    for i, (row, h) in enumerate(todo, 1):
        elapsed = time.time() - start
        remaining = total_cost - done_cost
        eta = f"ETA {_fmt_seconds(elapsed / done_cost * remaining)}" if done_cost > 0 else "ETA after the first row"
        log(f"\n[reproduce] row {i}/{len(todo)}: {row.label} ({row.key}) -- elapsed {_fmt_seconds(elapsed)}, {eta}")
        summary = sdir / f"{row.key}.summary.json"
        summary.unlink(missing_ok=True)
        run_name = f"{plan.preset}-{row.key}-{time.strftime('%Y%m%d-%H%M%S')}"
        t0 = time.time()
        try:
            _run_cli(plan, _cli_args(plan, row, parent, summary, run_name), isolate)
            data = json.loads(summary.read_text())
            res = RowResult(row.key, "finished", h, {k: float(v) for k, v in data.get("metrics", {}).items()},
                            (data.get("params") or {}).get("trainable"), data.get("mlflow_run_id"),
                            time.time() - t0)
        except Exception as err:  # one failing row must not stop the table
            log(f"[reproduce] row {row.key} FAILED: {err}")
            res = RowResult(row.key, "failed", h, seconds=time.time() - t0,
                            error="".join(traceback.format_exception_only(type(err), err)).strip())
        (sdir / f"{row.key}.json").write_text(json.dumps(asdict(res), indent=2, sort_keys=True))
        results[row.key] = res
        done_cost += row.cost
        log(f"[reproduce] row {row.key}: {res.status} in {_fmt_seconds(res.seconds)}")
    failed = [k for k, r in results.items() if r.status != "finished"]
    tracking.client().set_tag(parent, "rows_failed", ",".join(failed) or "none")
    log(f"\n[reproduce] {len(todo)} rows trained in {_fmt_seconds(time.time() - start)}"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return parent, results


def finish_parent(parent: str, results: dict[str, RowResult], artifacts: list[Path]) -> None:
    """Upload the result files to the parent run and end it (FAILED if a row failed)."""
    from common import tracking

    for path in artifacts:
        tracking.log_artifact(parent, path, "results")
    ok = all(r.status == "finished" for r in results.values())
    tracking.end_run(parent, "FINISHED" if ok else "FAILED")
