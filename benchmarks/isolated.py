"""Run one measurement per fresh process, one after the other: the cost benchmarks' rows each get their own peak
memory and their own warm caches, and never compete for the cores."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

Measure = Callable[[str, dict[str, Any]], dict[str, Any]]


def _worker(measure: Measure, method: str, opts: dict[str, Any], queue: Any) -> None:
    try:
        queue.put(measure(method, opts))
    except Exception as err:  # report, don't hang the parent
        queue.put({"method": method, "error": f"{type(err).__name__}: {err}"})


def run_isolated(measure: Measure, methods: Sequence[str], opts: dict[str, Any], who: str,
                 width: int = 14) -> list[dict[str, Any]]:
    """``measure(method, opts)`` (a module-level function) for every method, each in its own spawned process;
    prints a line per method; a failed method raises naming ``who`` (the benchmark file)."""
    ctx = mp.get_context("spawn")
    out = []
    for method in methods:
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(measure, method, opts, queue))
        proc.start()
        res = queue.get()
        proc.join()
        if "error" in res:
            raise RuntimeError(f"{who}: {method} failed: {res['error']}")
        out.append(res)
        print(f"  {method:<{width}} {res['step_ms']:9.1f} ms/step  activations {res['activations_mb']:9.1f} MiB",
              flush=True)
    return out
