"""The ``pretrain`` command of ``python -m common.data.synth`` (:func:`cli_commands`).

Part of :mod:`common.models.pretrain` (which re-exports every public name).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common.models.cache import ensure_pretrained, read_manifest
from common.models.registry import SHAPES_MODELS


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="build all tiny backbones")
    p.add_argument(
        "--name", action="append", choices=sorted(SHAPES_MODELS), default=[], help="build this backbone (repeatable)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if a valid cache entry exists")
    p.add_argument(
        "--budget", type=float, default=None, help="multiple of the default training budget (default 1.0, or $CVINW_PRETRAIN_BUDGET)"
    )
    p.add_argument("--out", type=Path, default=None, help="cache root (default outputs/pretrained)")


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from common.models.cache import default_budget

    names = sorted(SHAPES_MODELS) if args.all else list(dict.fromkeys(args.name))
    if not names:
        raise SystemExit(f"pretrain: say which backbones to build: --all or --name NAME (one of {sorted(SHAPES_MODELS)})")
    budget = default_budget() if args.budget is None else args.budget
    console = Console()
    t0 = time.perf_counter()
    table = Table(title=f"ShapesWorld backbones (budget {budget:g})")
    for col in ("name", "status", "time (s)", "metrics"):
        table.add_column(col)
    for name in names:
        before = read_manifest(name, args.out)
        path = ensure_pretrained(name, budget=budget, force=args.force, root=args.out)
        manifest = read_manifest(name, args.out) or {}
        status = "cached" if before is not None and before == manifest else "built"
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in manifest.get("metrics", {}).items())
        table.add_row(name, status, f"{manifest.get('time_s', {}).get('total', float('nan')):.1f}", metrics)
        console.print(f"{name}: {status} -> {path}")
    console.print(table)
    console.print(f"total wall time {time.perf_counter() - t0:.1f} s on {torch.get_num_threads()} torch threads")
    return 0


def cli_commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]]:
    """The ``pretrain`` command of ``python -m common.data.synth``."""
    return {
        "pretrain": (
            "pretrain the tiny ShapesWorld backbones (shapes-clip-tiny, shapes-swin-tiny, shapes-resnet-tiny, "
            "shapes-convnext-tiny) into outputs/pretrained/",
            _add_arguments,
            _run,
        )
    }
