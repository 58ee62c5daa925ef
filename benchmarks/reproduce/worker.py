"""A long-lived process that trains table rows one after another: ``python -m benchmarks.reproduce.worker``.

When a reproduction trains several rows at once (``jobs > 1``), each row used to be a fresh ``python -m <paper>``
process, and a tiny row spent ~12 s of its ~20-90 s importing torch, Lightning, timm and MLflow. A worker pays
that once: :class:`Workers` keeps ``jobs`` of them and hands each row to an idle one. A row still runs exactly the
paper's CLI (:func:`common.cli.run`, the in-process path that ``jobs == 1`` uses), with its output in the row's
log file; a row whose command fails fails alone, and a worker that dies (native crash, out of memory) fails its row
and is replaced.

Protocol: one JSON request per line on stdin (``args``, ``prog``, ``env``, ``log``, ``summary``); one JSON reply
per line on the worker's original stdout (``ok``, ``summary`` or ``error``, ``cpu`` seconds of the row).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

#: environment variables a row may set (the CLI's run identity); cleared before and after every row
ROW_ENV = ("CVINW_RUN_NAME", "CVINW_MLFLOW_RUN_ID")
#: a worker is replaced after this many rows (bounds whatever a long series of runs leaves in one process)
MAX_ROWS_PER_WORKER = 40


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def run_in_process(args: list[str], prog: str | None, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One CLI command through :func:`common.cli.run` in this process, with ``env`` (the row's run identity) set
    only while it runs; returns its summary and this process's CPU seconds for it. A bad command line or the NaN
    guard's exit (``SystemExit`` other than 0) raises ``RuntimeError``. Used by the driver's in-process rows
    (``jobs == 1``) and by every row of a worker."""
    from common.cli import run

    for k in ROW_ENV:
        os.environ.pop(k, None)
    os.environ.update(env)
    before = _cpu()
    try:
        summary = run(args, prog=prog)
    except SystemExit as err:  # argument errors and the NaN guard exit
        if err.code not in (0, None):
            raise RuntimeError(f"the CLI exited with status {err.code}") from err
        summary = {}
    finally:
        for k in ROW_ENV:
            os.environ.pop(k, None)
    return summary, _cpu() - before


def _run_one(req: dict[str, Any]) -> dict[str, Any]:
    before = _cpu()
    try:
        summary, cpu = run_in_process(req["args"], req.get("prog"), req.get("env") or {})
        Path(req["summary"]).write_text(json.dumps(summary, default=str))
        return {"ok": True, "cpu": cpu}
    except BaseException as err:  # noqa: BLE001 - one row's failure is reported, the worker goes on
        traceback.print_exc()
        return {"ok": False, "error": "".join(traceback.format_exception_only(type(err), err)).strip(),
                "cpu": _cpu() - before}


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # the reply channel; fds 1 and 2 go to each row's log
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        with open(req["log"], "w") as log:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                reply = _run_one(req)
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
        replies.write(json.dumps(reply) + "\n")


class WorkerDied(RuntimeError):
    """The worker process ended while it trained a row."""


class Worker:
    """One worker process (started on first use) and the number of rows it has trained."""

    def __init__(self, threads: int | None) -> None:
        from common.paths import project_root

        env = dict(os.environ)
        for k in ROW_ENV:
            env.pop(k, None)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.reproduce.worker"], cwd=project_root(),
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.rows = 0

    def run(self, args: list[str], prog: str, env: dict[str, str], log: Path, summary: Path) -> tuple[bool, str, float]:
        """(ok, error, CPU seconds) of one row; :class:`WorkerDied` if the process ended."""
        req = {"args": [str(a) for a in args], "prog": prog, "env": env, "log": str(log), "summary": str(summary)}
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        self.rows += 1
        if not line:
            code = self.proc.wait()
            raise WorkerDied(f"the row's worker process exited with status {code}; its output is in {log}")
        reply = json.loads(line)
        return bool(reply["ok"]), str(reply.get("error") or ""), float(reply.get("cpu") or 0.0)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait()


class Workers:
    """A pool of :class:`Worker` processes shared by the threads that run rows (at most one row per worker)."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self.idle: list[Worker] = []
        self.lock = threading.Lock()
        self.started = 0  # worker processes started (the driver's summary line says how many)

    def run(self, args: list[str], prog: str, env: dict[str, str], log: Path, summary: Path) -> tuple[bool, str, float]:
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        if worker is None:
            worker = Worker(self.threads)
            with self.lock:
                self.started += 1
        try:
            result = worker.run(args, prog, env, log, summary)
        except WorkerDied:
            worker.close()
            raise
        if worker.rows >= MAX_ROWS_PER_WORKER:
            worker.close()
        else:
            with self.lock:
                self.idle.append(worker)
        return result

    def close(self) -> None:
        with self.lock:
            workers, self.idle = self.idle, []
        for w in workers:
            w.close()


if __name__ == "__main__":
    main()
