"""``python -m benchmarks.reproduce <paper> --preset tiny|smoke|paper [--data PATH]``: reproduce a paper's table.

The Makefile's ``reproduce-<paper>`` targets call this (``DATA=`` becomes ``--data``). See :mod:`benchmarks.reproduce`
for what happens. Exit status: 0 when every row finished; 1 when a row failed (no table when all failed); 2 when
the data check before the first row failed (nothing trained or written) or for a bad command line.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import benchmarks.reproduce as pkg
from benchmarks.reproduce import DataCheckError, finish_parent, run_plan


def available_papers() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("paper", help=f"one of: {', '.join(available_papers())}")
    parser.add_argument("--preset", default="tiny", choices=["smoke", "tiny", "paper"])
    parser.add_argument("--data", default=None, help="dataset root (default: the ShapesWorld stand-in)")
    parser.add_argument("--rows", default=None, help="comma-separated row keys to run (default: all)")
    parser.add_argument("--force", action="store_true", help="retrain rows even if they finished with this config")
    parser.add_argument("--isolate", action="store_true", help="run every row in its own Python process")
    parser.add_argument("--jobs", type=int, default=None,
                        help="rows trained at once, each in its own process (1: in this process; default: the "
                             "paper's choice for the preset)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads per row (default: torch's; 1 with --jobs > 1)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where <paper>_<preset>.md/.csv go (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.paper not in available_papers():
        parser.error(f"no reproduction for {args.paper!r}; known: {', '.join(available_papers())}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    module = importlib.import_module(f"benchmarks.reproduce.{args.paper}")
    only = [r.strip() for r in args.rows.split(",")] if args.rows else None
    try:
        plan = module.make_plan(args.preset, args.data, only)
        parent, results = run_plan(plan, force=args.force, isolate=args.isolate, jobs=args.jobs or plan.jobs,
                                   threads=args.threads)
    except DataCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if results and not any(r.status == "finished" for r in results.values()):
        finish_parent(parent, results, [])
        first = next((r for r in results.values() if r.error), None)
        print(f"\n[reproduce] all {len(results)} rows failed: no results table written; MLflow parent run {parent} "
              "(FAILED)" + (f". First error, row {first.key}: {first.error}" if first else ""), file=sys.stderr)
        return 1
    text, files = module.write_results(plan, results, parent, args.results_dir)
    finish_parent(parent, results, files)
    print("\n" + text)
    print("\n[reproduce] results: " + ", ".join(str(f) for f in files) + f"; MLflow parent run {parent}")
    return 0 if all(r.status == "finished" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
