"""``python -m benchmarks.params <paper>``: trainable parameters of every table row, ours beside the paper's.

The rows come from ``benchmarks/param_budgets/<paper>.py`` (see that package's docstring to add a paper). Models
are built at paper scale on the ``meta`` device where the paper module allows it, so nothing is downloaded and no
weights are allocated. Prints method, ours (M), paper (M), ratio, and whether the row is within the tolerance;
``--csv FILE`` also writes the table. Exit status 0 unless ``--strict`` and a row with a paper figure is outside.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import pkgutil
import sys
from pathlib import Path

import benchmarks.param_budgets as budgets_pkg
from benchmarks.param_budgets import BudgetRow


def available_papers() -> list[str]:
    """Papers with a budget module under benchmarks/param_budgets/."""
    return sorted(m.name for m in pkgutil.iter_modules(budgets_pkg.__path__) if not m.name.startswith("_"))


def load_budget(paper: str):
    """The budget module of ``paper``; a clear error listing the known papers otherwise."""
    if paper not in available_papers():
        raise SystemExit(f"no parameter budget for {paper!r}; known: {', '.join(available_papers()) or 'none'} "
                         "(add benchmarks/param_budgets/<paper>.py with TITLE and budget_rows())")
    return importlib.import_module(f"benchmarks.param_budgets.{paper}")


def format_table(rows: list[BudgetRow], tolerance: float) -> str:
    """A fixed-width text table."""
    header = f"{'method':<30} {'ours (M)':>10} {'paper (M)':>10} {'ratio':>7}  {'ok':<3} note"
    lines = [header, "-" * len(header)]
    for r in rows:
        paper = f"{r.paper_m:.2f}" if r.paper_m is not None else "?"
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        ok = {True: "yes", False: "NO", None: "-"}[r.within(tolerance)]
        lines.append(f"{r.method:<30} {r.ours_m:>10.2f} {paper:>10} {ratio:>7}  {ok:<3} {r.note}")
    return "\n".join(lines)


def write_csv(rows: list[BudgetRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "ours", "ours_m", "paper_m", "ratio", "note"])
        for r in rows:
            w.writerow([r.method, r.ours, f"{r.ours_m:.4f}", "" if r.paper_m is None else r.paper_m,
                        "" if r.ratio is None else f"{r.ratio:.4f}", r.note])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.params", description=__doc__.splitlines()[0])
    parser.add_argument("paper", help=f"one of: {', '.join(available_papers())}")
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance (default 0.05)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a row with a paper figure is outside")
    args = parser.parse_args(argv)
    module = load_budget(args.paper)
    rows = module.budget_rows()
    print(getattr(module, "TITLE", args.paper))
    print(format_table(rows, args.tolerance))
    if args.csv:
        write_csv(rows, args.csv)
    bad = [r.method for r in rows if r.within(args.tolerance) is False]
    if bad:
        print(f"\noutside ±{args.tolerance:.0%}: {', '.join(bad)} (see the paper's README for why)")
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
