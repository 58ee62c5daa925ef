"""Reproduce a paper's table: one CLI training run per table row, tracked as children of one MLflow parent run.

A paper contributes ``benchmarks/reproduce/<paper>.py`` with

* ``make_plan(preset: str, data: str | None) -> Plan``: the rows to run (a config each), a ``check`` of the data the
  rows read when it is not generated (the paper preset, ``--data``; :func:`check_datamodules`) and a ``prepare``
  step (build data / pretrained backbones once, before the first row);
* ``write_results(plan, results) -> str``: turn the finished rows into ``benchmarks/results/<paper>_<preset>.md``
  and ``.csv`` and return the table text to print (it may also log table-level metrics to the runs).

:func:`run_plan` does the rest: one parent run, rows in order with their position and an ETA, each row through
the paper's CLI (``fit --config ROW.yaml --run.parent_run_id PARENT``: the run's setting, preset and name are the
CLI's own, :func:`common.tracking.config_setting` / :func:`common.tracking.new_run_name`, so ``python -m <paper> fit
--config ROW.yaml --ckpt_path last`` finds the row's ``last.ckpt`` and a row's ``command`` tag is that command), in
this process through
:func:`common.cli.run` (which returns the row's summary; saves one framework start-up per row) or in a subprocess
each (``isolate=True``, the summary through ``--run.summary_path``). A row whose config (files +
overrides) is unchanged since it last finished is not trained again: its result is read back from the state
folder ``outputs/reproduce/<paper>/<preset>/``, so an interrupted reproduction resumes where it stopped.

Before the first row the data is checked (``Plan.check``): a missing dataset or a wrong layout is one
:class:`common.errors.DataCheckError` naming ``DATA=`` and the layout (exit status 2), with nothing trained or
written. A reproduction whose rows all failed writes no table (exit status 1).
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

from benchmarks.reproduce.worker import ROW_ENV, Workers, run_in_process
from common import tracking
from common.errors import DataCheckError
from common.paths import outputs_dir, project_root

__all__ = ["DataCheckError", "Plan", "Row", "RowResult", "check_data_arg", "check_datamodules", "config_hash", "finish_parent",
           "mean_std", "run_plan", "save_table", "state_dir"]

#: environment variables the CLI uses to pass a run's identity to DDP children; cleared between in-process rows
_CLI_ENV = ROW_ENV


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
    command: str = "fit"  # the CLI subcommand (``validate`` for a row that trains nothing, e.g. zero-shot CLIP)
    #: key of an earlier ``fit`` row whose last checkpoint this row evaluates (``--ckpt_path``): e.g. a model trained
    #: on the base classes validated on the novel ones. It runs after that row, and again whenever that row did.
    checkpoint_of: str | None = None
    #: how the command receives that checkpoint: ``--ckpt_path`` (evaluate it, or resume it), or e.g.
    #: ``--model.init_args.init_from`` (a ``fit`` that starts from another row's trained weights)
    checkpoint_flag: str = "--ckpt_path"


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
    check: Callable[[], None] | None = None  # raises DataCheckError; runs before anything is written
    jobs: int = 1  # rows at once when the command line does not say (see run_plan)


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
    cpu_seconds: float | None = None  # CPU time of the row (user + system), independent of machine load
    reused: bool = False
    error: str | None = None
    run_name: str | None = None
    checkpoint: str | None = None  # the fit's last checkpoint (what a ``checkpoint_of`` row evaluates)


def state_dir(paper: str, preset: str) -> Path:
    """Where the rows' results of a reproduction are kept between invocations."""
    return outputs_dir() / "reproduce" / paper / preset


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def config_hash(row: Row, checkpoint: str | None = None) -> str:
    """Digest of what defines a row's run: its config file's text and the overrides (and, for a ``checkpoint_of``
    row, the checkpoint it evaluates)."""
    h = hashlib.sha256()
    h.update(_resolve(row.config).read_bytes())
    for o in row.overrides:
        h.update(b"\0" + o.encode())
    if checkpoint:
        h.update(b"\0ckpt\0" + checkpoint.encode())
    return h.hexdigest()[:16]


def _check_order(rows: list[Row]) -> None:
    """Every ``checkpoint_of`` names an earlier ``fit`` row."""
    seen: dict[str, Row] = {}
    for row in rows:
        dep = seen.get(row.checkpoint_of) if row.checkpoint_of else None
        if row.checkpoint_of and (dep is None or dep.command != "fit"):
            raise ValueError(f"row {row.key}: checkpoint_of={row.checkpoint_of!r} must name an earlier fit row")
        seen[row.key] = row


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


def row_setting(row: Row) -> str:
    """The setting of a row's runs: the CLI's for its config (``smoke/lora``; the same when a user runs it)."""
    return tracking.config_setting([_resolve(row.config)])


def _cli_args(plan: Plan, row: Row, parent: str, checkpoint: str | None = None) -> list[str]:
    """The row's command after ``python -m <paper>``: its config, overrides (``--ckpt_path`` for a ``checkpoint_of``
    row) and the parent run; what a user would type (the run's name comes from the environment, the setting and
    preset from the config path)."""
    args = [row.command, "--config", str(_resolve(row.config)), *row.overrides, "--run.parent_run_id", parent]
    if checkpoint:
        args += [row.checkpoint_flag, checkpoint]
    if plan.experiment != plan.cli_module:
        args += ["--run.experiment", plan.experiment]
    if tracking.setting_preset(row_setting(row)) != plan.preset:
        args += ["--run.preset", plan.preset]
    return args


def one_process(row: Row) -> bool:
    """Whether the row trains in one process (``trainer.devices: 1``, not overridden): only those may run in a
    reused worker (:mod:`benchmarks.reproduce.worker`); a DDP launcher would re-run the worker's own command."""
    import yaml

    if any(o.startswith(("--trainer.devices", "--trainer.num_nodes", "--trainer.strategy")) for o in row.overrides):
        return False
    try:
        trainer = (yaml.safe_load(_resolve(row.config).read_text()) or {}).get("trainer") or {}
    except (OSError, yaml.YAMLError):
        return False
    return trainer.get("devices") in (1, "1") and trainer.get("num_nodes", 1) == 1


def _run_cli(plan: Plan, args: list[str], isolate: bool, summary: Path, log_file: Path | None = None,
             threads: int | None = None, run_name: str | None = None,
             workers: Workers | None = None) -> tuple[dict[str, Any], float]:
    """Run one CLI command; returns its summary (``common.cli.run``'s) and its CPU seconds (user + system).

    In this process through :func:`common.cli.run`; with ``isolate`` in a subprocess of ``python -m <paper>`` that
    writes the summary to ``summary`` (``--run.summary_path``), or, given ``workers``, in one of their long-lived
    processes (the same :func:`common.cli.run`, without a new interpreter's imports). ``run_name`` reaches the CLI
    through the environment (as it does DDP children), so that the run's ``command`` tag stays the command a user
    would type."""
    if isolate and workers is not None and log_file is not None:
        summary.unlink(missing_ok=True)
        ok, error, cpu = workers.run(args, f"python -m {plan.cli_module}", {_CLI_ENV[0]: run_name} if run_name else {},
                                     log_file, summary)
        if not ok:
            raise RuntimeError(f"{error}; its output is in {log_file}")
        return json.loads(summary.read_text()), cpu
    if isolate:
        env = dict(os.environ)
        for k in _CLI_ENV:
            env.pop(k, None)
        if run_name:
            env[_CLI_ENV[0]] = run_name
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        summary.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", plan.cli_module, *args, "--run.summary_path", str(summary)]
        with (log_file.open("w") if log_file is not None else open(os.devnull, "w")) as fh:
            out = fh if log_file is not None else None
            proc = subprocess.Popen(cmd, cwd=project_root(), env=env, stdout=out,
                                    stderr=subprocess.STDOUT if out else None)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            where = f"; its output is in {log_file}" if log_file is not None else ""
            raise RuntimeError(f"the CLI exited with status {proc.returncode}{where}")
        return json.loads(summary.read_text()), usage.ru_utime + usage.ru_stime
    return run_in_process(args, f"python -m {plan.cli_module}", {_CLI_ENV[0]: run_name} if run_name else {})


def _train_row(plan: Plan, row: Row, h: str, parent: str, sdir: Path, isolate: bool, parallel: bool,
               threads: int | None, checkpoint: str | None = None, workers: Workers | None = None) -> RowResult:
    run_name = tracking.new_run_name(row_setting(row), outputs_dir() / plan.experiment, claim=True)
    t0 = time.time()
    try:
        data, cpu = _run_cli(plan, _cli_args(plan, row, parent, checkpoint), isolate,
                             sdir / f"{row.key}.summary.json", sdir / f"{row.key}.log" if parallel else None,
                             threads, run_name, workers if workers is not None and one_process(row) else None)
        if not data:
            raise RuntimeError("the CLI returned no summary")
        res = RowResult(row.key, "finished", h, {k: float(v) for k, v in data.get("metrics", {}).items()},
                        (data.get("params") or {}).get("trainable"), data.get("mlflow_run_id"), time.time() - t0,
                        cpu, run_name=data.get("run_name") or run_name, checkpoint=data.get("last_model_path"))
    except Exception as err:  # one failing row must not stop the table
        res = RowResult(row.key, "failed", h, seconds=time.time() - t0, run_name=run_name,
                        error="".join(traceback.format_exception_only(type(err), err)).strip())
    (sdir / f"{row.key}.json").write_text(json.dumps(asdict(res), indent=2, sort_keys=True))
    return res


def _print(msg: str) -> None:
    print(msg, flush=True)


def run_plan(plan: Plan, force: bool = False, isolate: bool = False, jobs: int = 1, threads: int | None = None,
             log: Callable[[str], None] = _print) -> tuple[str, dict[str, RowResult]]:
    """Run (or reuse) every row of ``plan``; returns the parent run id and the results by row key.

    ``jobs > 1`` trains that many rows at once, each in another process (``threads`` torch threads each; their
    output goes to ``<state>/<row>.log``): on a 2-core machine, two 1-thread rows beat one 2-thread row. Rows on
    one device run in ``jobs`` reused worker processes (:mod:`benchmarks.reproduce.worker`: the interpreter's
    start-up once per worker, not once per row); ``isolate`` gives every row a fresh process instead.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    from contextlib import closing, nullcontext

    from common import tracking

    _check_order(plan.rows)
    sdir = state_dir(plan.paper, plan.preset)
    todo: list[tuple[Row, str]] = []
    results: dict[str, RowResult] = {}
    for row in plan.rows:
        if row.checkpoint_of and row.checkpoint_of not in results:  # its model trains now: so does it
            todo.append((row, ""))
            continue
        h = config_hash(row, results[row.checkpoint_of].checkpoint if row.checkpoint_of else None)
        prev = _load_state(sdir / f"{row.key}.json")
        if not force and prev is not None and prev.status == "finished" and prev.config_hash == h:
            prev.reused = True
            results[row.key] = prev
        else:
            todo.append((row, h))
    if todo and plan.check is not None:
        plan.check()  # DataCheckError before anything is trained or written
    sdir.mkdir(parents=True, exist_ok=True)
    log(f"[reproduce] {plan.paper} / {plan.preset}: {len(plan.rows)} rows, {len(results)} already done "
        f"with the same config, {len(todo)} to run (state in {sdir})")
    if todo and plan.prepare is not None:
        t0 = time.time()
        plan.prepare()
        log(f"[reproduce] prepared data and backbones in {_fmt_seconds(time.time() - t0)}")
    parent = _parent_run(plan, sdir)
    start = time.time()
    total_cost = sum(r.cost for r, _ in todo)
    done_cost = 0.0
    parallel = jobs > 1

    def eta() -> str:
        elapsed = time.time() - start
        if done_cost <= 0:
            return f"elapsed {_fmt_seconds(elapsed)}, ETA after the first row"
        return f"elapsed {_fmt_seconds(elapsed)}, ETA {_fmt_seconds(elapsed / done_cost * (total_cost - done_cost))}"

    workers = Workers(threads or 1) if parallel and not isolate else None

    def start_row(row: Row, h: str, isolate_: bool, parallel_: bool, threads_: int | None) -> RowResult:
        """Run a row, giving a ``checkpoint_of`` row its model's checkpoint (a failed model: the row fails)."""
        if not row.checkpoint_of:
            return _train_row(plan, row, h, parent, sdir, isolate_, parallel_, threads_, workers=workers)
        dep = results.get(row.checkpoint_of)
        ckpt = dep.checkpoint if dep is not None and dep.status == "finished" else None
        if not ckpt or not Path(ckpt).is_file():
            why = f"row {row.checkpoint_of} has no checkpoint" + (f" ({ckpt} is gone)" if ckpt else "")
            res = RowResult(row.key, "failed", h, error=f"nothing to evaluate: {why}")
            (sdir / f"{row.key}.json").write_text(json.dumps(asdict(res), indent=2, sort_keys=True))
            return res
        return _train_row(plan, row, config_hash(row, ckpt), parent, sdir, isolate_, parallel_, threads_, ckpt,
                          workers)

    def finished(row: Row, res: RowResult) -> None:
        nonlocal done_cost
        results[row.key] = res
        done_cost += row.cost
        msg = f"[reproduce] row {row.key}: {res.status} in {_fmt_seconds(res.seconds)} (run {res.run_name})"
        if res.cpu_seconds is not None:
            msg += f" (CPU {_fmt_seconds(res.cpu_seconds)})"
        log(msg + (f" ({res.error})" if res.error else "") + f" -- {len(results)}/{len(plan.rows)} done, {eta()}")

    queue = list(enumerate(todo, 1))
    if not parallel:  # in the main thread: Lightning installs signal handlers
        for i, (row, h) in queue:
            log(f"\n[reproduce] row {i}/{len(todo)}: {row.label} ({row.key}) -- {eta()}")
            finished(row, start_row(row, h, isolate, False, threads))
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool, (closing(workers) if workers else nullcontext()):
            pending: dict = {}
            while queue or pending:
                running = {r.key for r in pending.values()} | {r.key for _, (r, _) in queue}
                while len(pending) < jobs:
                    # the first queued row whose model (checkpoint_of) is not still queued or training
                    ready = [q for q in queue if q[1][0].checkpoint_of not in running]
                    if not ready:
                        break
                    queue.remove(ready[0])
                    i, (row, h) = ready[0]
                    running = {r.key for r in pending.values()} | {r.key for _, (r, _) in queue} | {row.key}
                    log(f"\n[reproduce] row {i}/{len(todo)}: {row.label} ({row.key}) -- {eta()}; output in "
                        f"{sdir / (row.key + '.log')}")
                    pending[pool.submit(start_row, row, h, True, True, threads or 1)] = row
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(pending.pop(fut), fut.result())
    failed = [k for k, r in results.items() if r.status != "finished"]
    tracking.client().set_tag(parent, "rows_failed", ",".join(failed) or "none")
    cpu = sum(results[r.key].cpu_seconds or 0.0 for r, _ in todo)
    log(f"\n[reproduce] {len(todo)} rows trained in {_fmt_seconds(time.time() - start)} "
        f"(CPU {_fmt_seconds(cpu)} over {max(1, jobs)} job(s)"
        + (f", {workers.started} worker process(es))" if workers is not None else ")")
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return parent, results


def _data_override(overrides: list[str]) -> dict[str, Any]:
    """``--data.init_args.K=V`` / ``--data.init_args.K V`` overrides as ``{K: V}`` (V parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    prefix = "--data.init_args."
    for i, arg in enumerate(overrides):
        if not arg.startswith(prefix):
            continue
        key, eq, value = arg[len(prefix):].partition("=")
        if not eq:
            if i + 1 >= len(overrides):
                continue
            value = overrides[i + 1]
        out[key] = yaml.safe_load(value)
    return out


def check_datamodules(plan: Plan, what: str, flag_help: str) -> None:
    """Set up (``prepare_data`` + ``setup``: ``fit`` for a training row, ``validate`` for one that evaluates) the
    datamodule of every distinct data configuration the rows read, as the rows would, and raise one
    :class:`DataCheckError` for the first that fails: ``what`` (the data the preset needs), the root, the datamodule's
    message and its expected layout, and ``flag_help`` (how to pass ``DATA=``). Reads only: a root that is given is
    never written."""
    import importlib

    import yaml

    seen: set[tuple[str, str, str]] = set()
    for row in plan.rows:
        cfg = yaml.safe_load(_resolve(row.config).read_text())
        data = dict(cfg.get("data") or {})
        class_path = str(data.get("class_path", ""))
        init_args = {**(data.get("init_args") or {}), **_data_override(row.overrides)}
        # a row that only evaluates needs its evaluation list and class CSV, not a training list
        stage = "fit" if row.command == "fit" else "validate"
        key = (class_path, json.dumps(init_args, sort_keys=True, default=str), stage)
        if not class_path or key in seen:
            continue
        seen.add(key)
        module, _, name = class_path.rpartition(".")
        dm = None
        try:
            dm = getattr(importlib.import_module(module), name)(**init_args)
            dm.prepare_data()
            dm.setup(stage)
        except Exception as err:
            msg = str(err).strip() if type(err).__module__.split(".")[0] == "common" else f"{type(err).__name__}: {err}"
            layout = dm.layout_help() if dm is not None and hasattr(dm, "layout_help") else ""
            if layout and layout.strip() not in msg:
                msg += f"\nExpected layout:\n{layout}"
            root = init_args.get("root")
            raise DataCheckError(f"{what}; the data at {root if root else 'the default location'} is not usable "
                                 f"(row {row.key}):\n{msg}\n{flag_help}") from err


def rows_to_csv(rows: list[dict[str, Any]], fields: list[str], digits: int = 4) -> str:
    """A results table as CSV text: one line per row, the ``fields`` columns, floats with ``digits`` decimals, None
    as an empty cell (every paper's ``<paper>_<preset>.csv``)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.{digits}f}" if isinstance(r[k], float) else r[k]))
                    for k in fields})
    return buf.getvalue()


def check_data_arg(paper: str, preset: str, data: object, needs: str, data_help: str, *,
                   must_exist: str | None = None) -> None:
    """The DATA= checks every driver makes before planning: the paper preset needs it (``"<paper>'s paper preset
    needs <needs> and no DATA= was given"``), the ShapesWorld presets refuse it, and ``must_exist`` (the DATA
    string) must name a folder. Each message ends with the driver's ``data_help`` (how to give it, the layout)."""
    if preset == "paper" and not data:
        raise DataCheckError(f"{paper}'s paper preset needs {needs} and no DATA= was given; {data_help}")
    if preset != "paper" and data:
        raise DataCheckError(f"DATA= is read by the paper preset only (the {preset} preset trains on ShapesWorld); "
                             f"{data_help}")
    if must_exist:
        path = Path(must_exist).expanduser()
        if not path.is_dir():
            raise DataCheckError(f"DATA={must_exist}: {path} does not exist; {data_help}")


def mean_std(values: list[float], count: bool = False) -> str:
    """A table cell over seeds: ``-`` (none), ``v`` (one), else ``mean ± sample std`` (``(n)`` after it with
    ``count``), one decimal."""
    import statistics

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    cell = f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    return cell + (f" ({len(values)})" if count else "")


def save_table(plan: Plan, md: str, csv_text: str, results_dir: Path | None = None) -> list[Path]:
    """Write ``<paper>_<preset>.md`` and ``.csv`` into ``results_dir`` (default ``benchmarks/results/``)."""
    out_dir = results_dir or project_root() / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / f"{plan.paper}_{plan.preset}.md"
    csv_path = out_dir / f"{plan.paper}_{plan.preset}.csv"
    md_path.write_text(md + "\n")
    csv_path.write_text(csv_text)
    return [md_path, csv_path]


def finish_parent(parent: str, results: dict[str, RowResult], artifacts: list[Path]) -> None:
    """Upload the result files to the parent run and end it (FAILED if a row failed)."""
    from common import tracking

    for path in artifacts:
        tracking.log_artifact(parent, path, "results")
    ok = all(r.status == "finished" for r in results.values())
    tracking.end_run(parent, "FINISHED" if ok else "FAILED")
