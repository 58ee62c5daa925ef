"""``python -m common.mlflow_ui``: serve the project's MLflow store and print where the runs are.

``make mlflow-ui`` calls it. Before the server starts it prints, for each experiment (one per paper), the address of
its runs list, and for the newest reproduction (a parent run with child rows) the address of the parent run, whose
children are the table's rows (select them in the runs list and press *Compare* for the compare view). MLflow 3.17's
UI opens an experiment on its GenAI overview ("Traces: 0", whatever the experiment's ``mlflow.experimentKind`` tag:
tried); the printed addresses go straight to the training runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common import tracking


def experiment_lines(base_url: str, uri: str | None = None) -> list[str]:
    """One line per active experiment of the store: its name, its run count and the address of its runs list, and
    the newest reproduction (parent) run's address."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking.ensure_store(uri))
    lines: list[str] = []
    for exp in c.search_experiments():
        if exp.name == "Default" and not c.search_runs([exp.experiment_id], max_results=1):
            continue
        runs = c.search_runs([exp.experiment_id], max_results=5000)
        lines.append(f"  {exp.name}: {len(runs)} runs  {tracking.runs_url(base_url, exp.experiment_id)}")
        parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags
                   and any(tracking.PARENT_TAG in o.data.tags and o.data.tags[tracking.PARENT_TAG] == r.info.run_id
                           for o in runs)]
        if parents:
            newest = max(parents, key=lambda r: r.info.start_time)
            name = newest.data.tags.get("mlflow.runName", newest.info.run_id)
            lines.append(f"    newest reproduction '{name}': "
                         f"{tracking.run_url(base_url, exp.experiment_id, newest.info.run_id)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.mlflow_ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-only", action="store_true", help="print the addresses, do not start the server")
    args = p.parse_args(argv)
    uri = tracking.ensure_store()
    base = f"http://{args.host}:{args.port}"
    print(f"[mlflow-ui] store {uri}")
    lines = experiment_lines(base, uri)
    print("\n".join(lines) if lines else "  (no runs yet: run `make reproduce-polyhistor PRESET=smoke` first)")
    if args.print_only:
        return 0
    if not tracking.is_local_store(uri):
        print(f"[mlflow-ui] {uri} is a server already: open it in a browser", file=sys.stderr)
        return 0
    cmd = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri,
           "--default-artifact-root", str(tracking.artifact_root()), "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
