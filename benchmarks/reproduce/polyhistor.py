"""Polyhistor's PASCAL-Context table: every row of ``polyhistor/configs/<preset>/``, single-task rows first.

Table columns: trainable parameters, semseg mIoU, human-parts mIoU, saliency mIoU, normals mean angle (lower is
better) and Δm against our own single-task rows, each beside the paper's figure. The single-task row is four
runs (one per task); its parameters are their sum and its metrics each run's own task.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.reproduce import (
    Plan,
    Row,
    RowResult,
    _data_override,
    check_datamodules,
    rows_to_csv,
    save_table,
    state_dir,
)
from common.data.synth.pascal_mt import stand_in_root
from common.metrics.dense import delta_m
from common.paths import project_root
from polyhistor.configs.generate import TASKS, row_names
from polyhistor.methods import METHODS
from polyhistor.module import LOWER_IS_BETTER, MAIN_METRIC

#: relative cost of a row (one step of the tiny preset, measured on 2 CPU cores), for the ETA
COST = {"single_task": 0.35, "decoders_only": 0.4, "mtl_full_ft": 0.6, "vl_adapter": 0.5, "adapter": 1.0,
        "bitfit": 0.9, "vpt_shallow": 1.0, "vpt_deep": 1.3, "compacter": 1.1, "compacter_pp": 1.0, "lora": 0.9,
        "hyperformer": 1.2, "polyhistor": 1.2, "polyhistor_lite": 1.2, "conv_adapter": 1.2}
#: tiny: the rows the issue's claims compare (decoders-only against the PEFT rows) run at these seeds too (the
#: config's own seed, 42, is the row without a suffix; ``<row>_seed<S>`` are the others); mean ± std in the table
EXTRA_SEEDS: dict[str, tuple[int, ...]] = {"tiny": (43, 44)}
SEEDED_METHODS = ("decoders_only", "adapter", "hyperformer", "polyhistor", "polyhistor_lite")
COLUMNS = [("semseg", "SemSeg mIoU ↑"), ("human_parts", "Parts mIoU ↑"), ("sal", "Sal mIoU ↑"),
           ("normals", "Normals mean° ↓")]


def _config_path(preset: str, stem: str) -> str:
    return f"polyhistor/configs/{preset}/{stem}.yaml"


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    """All rows of ``preset`` (or the ``only`` keys), single-task runs first."""
    rows = []
    for stem, method, _tasks in row_names():
        overrides = []
        if data:
            overrides += [f"--data.init_args.root={data}", "--data.init_args.synth_if_missing=false"]
        rows.append(Row(stem, METHODS[method].label + (f" [{stem.split('_', 2)[2]}]" if method == "single_task"
                                                         else ""), _config_path(preset, stem), overrides,
                        COST.get(method, 1.0) + 0.3))
    rows.sort(key=lambda r: not r.key.startswith("single_task"))
    # the extra seeds after every row's first seed: a cut reproduction already holds one seed of every row
    for seed in EXTRA_SEEDS.get(preset, ()):
        # costliest first: two rows at once finish together when the last rows started are the short ones
        for row in sorted([r for r in rows if r.key in SEEDED_METHODS], key=lambda r: -r.cost):
            rows.append(Row(f"{row.key}_seed{seed}", f"{row.label}, seed {seed}", row.config,
                            row.overrides + [f"--seed_everything={seed}"], row.cost))
    if only:
        unknown = set(only) - {r.key for r in rows}
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {[r.key for r in rows]}")
        rows = [r for r in rows if r.key in only]
    # tiny: two 1-thread rows at once use a 2-core laptop best; smoke rows are too short to pay a process start
    plan = Plan("polyhistor", preset, rows, cli_module="polyhistor", experiment="polyhistor",
                info={"data": data}, jobs=2 if preset == "tiny" else 1)
    plan.prepare = lambda: prepare(plan)
    if data or preset == "paper":  # the real (or a given) PASCAL_MT: checked before the first row
        plan.check = lambda: check_data(plan)
    return plan


def check_data(plan: Plan) -> None:
    """The PASCAL_MT the rows read (``DATA``, else the configs' own root) is there and in its layout, or one
    :class:`DataCheckError` naming ``DATA=`` and the layout."""
    given = plan.info.get("data")
    what = (f"Polyhistor's {plan.preset} preset reads PASCAL-Context multi-task (PASCAL_MT) from DATA={given}" if given
            else f"Polyhistor's {plan.preset} preset needs the real PASCAL-Context multi-task set (PASCAL_MT) and "
                 "no DATA= was given")
    check_datamodules(plan, what, (
        f"Give its folder: make reproduce-polyhistor PRESET={plan.preset} DATA=/path/to/PASCAL_MT "
        f"(python -m benchmarks.reproduce polyhistor --preset {plan.preset} --data /path/to/PASCAL_MT)."))


def prepare(plan: Plan) -> None:
    """Write the ShapesWorld PASCAL_MT and pretrain ``shapes-swin-tiny`` if the rows need them and they are missing."""
    if not plan.rows:
        return
    cfg = yaml.safe_load((project_root() / plan.rows[0].config).read_text())
    data_args = cfg["data"]["init_args"]
    model_args = cfg["model"]["init_args"]
    if plan.info.get("data") is None and data_args.get("synth_if_missing", data_args.get("generate_if_missing")):
        root = Path(data_args["root"]) if data_args.get("root") else stand_in_root(data_args.get("synth_options"))
        if not root.exists():
            from common.data.synth.pascal_mt import write_pascal_mt

            print(f"[reproduce] writing the ShapesWorld PASCAL_MT to {root}")
            write_pascal_mt(root, **(data_args.get("synth_options") or {}))
    pretrained = model_args.get("pretrained")
    if isinstance(pretrained, str) and pretrained.startswith("shapes-"):
        from common.models import ensure_pretrained

        ensure_pretrained(pretrained)


# ------------------------------------------------------------------------------------------------------ trivial row
TRIVIAL_LABEL = "Trivial (constant per task)"


def _trivial_source(plan: Plan) -> tuple[dict[str, Any], str]:
    """The datamodule (class path + init args, the rows' data overrides applied) of the preset's multi-task rows, and
    the digest of both under which its trivial metrics are cached."""
    import hashlib
    import json

    cfg = yaml.safe_load((project_root() / _config_path(plan.preset, "decoders_only")).read_text())
    overrides = plan.rows[0].overrides if plan.rows else []
    data = {"class_path": cfg["data"]["class_path"],
            "init_args": {**cfg["data"]["init_args"], **_data_override(overrides)}}
    return data, hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trivial_row_metrics(plan: Plan) -> dict[str, float]:
    """The constant predictor's metrics on the val split the rows are scored on (:mod:`polyhistor.trivial`), cached
    in the preset's state folder (``trivial.json``) per data config."""
    import importlib
    import json

    from polyhistor.trivial import trivial_metrics_of_datamodule

    data, digest = _trivial_source(plan)
    path = state_dir(plan.paper, plan.preset) / "trivial.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("data_hash") == digest:
            return saved["metrics"]
    module, _, name = data["class_path"].rpartition(".")
    dm = getattr(importlib.import_module(module), name)(**data["init_args"])
    metrics = trivial_metrics_of_datamodule(dm, "val")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data_hash": digest, "metrics": metrics}, indent=1) + "\n")
    return metrics


# ---------------------------------------------------------------------------------------------------------------- table
def _main(res: RowResult | None, task: str) -> float | None:
    if res is None or res.status != "finished":
        return None
    v = res.metrics.get(f"val/{task}/{MAIN_METRIC[task]}")
    # rounded as the CSV stores it, so that the table's Δm is exactly the Δm of the table's metrics
    return round(v, 6) if v is not None and math.isfinite(v) else None


def table_rows(results: dict[str, RowResult], trivial: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One dict per table row: method, key, status, params, the four metrics, Δm, and the paper's figures; with
    ``trivial`` (:func:`trivial_row_metrics`) a first row ``trivial``, the constant predictor of each task."""
    st = {t: _main(results.get(f"single_task_{t}"), t) for t in TASKS}
    baseline = {t: v for t, v in st.items() if v is not None}
    out = []
    if trivial is not None:
        metrics = {t: round(trivial[f"{t}/{MAIN_METRIC[t]}"], 6) for t in TASKS}
        row = {"method": TRIVIAL_LABEL, "key": "trivial", "status": "finished", "params_m": 0.0, **metrics,
               "delta_m": delta_m(metrics, baseline, LOWER_IS_BETTER) if len(baseline) == len(TASKS) else None}
        row.update({f"{k}_paper": None for k in ("params_m", "semseg", "human_parts", "sal", "normals", "delta_m")})
        out.append(row)
    for name, spec in METHODS.items():
        paper = spec.paper
        row: dict[str, Any] = {"method": spec.label, "key": name}
        if spec.single_task:
            runs = [results.get(f"single_task_{t}") for t in TASKS]
            if not any(runs):
                continue
            ok = all(r is not None and r.status == "finished" for r in runs)
            row["status"] = "finished" if ok else "incomplete"
            params = [r.trainable_params for r in runs if r is not None and r.trainable_params]
            row["params_m"] = sum(params) / 1e6 if ok else None
            metrics = dict(st)
            row["delta_m"] = 0.0 if len(baseline) == len(TASKS) else None
        else:
            res = results.get(name)
            if res is None:
                continue
            row["status"] = res.status
            row["params_m"] = res.trainable_params / 1e6 if res.trainable_params else None
            # the config's seed first, then the row's other seeds (``<name>_seed<S>``)
            runs = [res] + [r for k, r in sorted(results.items()) if re.fullmatch(rf"{re.escape(name)}_seed\d+", k)]
            scored = [(r.key, {t: _main(r, t) for t in TASKS}) for r in runs]
            scored = [(k, m) for k, m in scored if all(v is not None for v in m.values())]
            per_seed = [m for _k, m in scored]
            deltas = [delta_m(m, baseline, LOWER_IS_BETTER) for m in per_seed] if len(baseline) == len(TASKS) else []
            row["delta_m_of"] = dict(zip([k for k, _m in scored], deltas))  # each run's own Δm (MLflow)
            metrics = ({t: statistics.fmean(m[t] for m in per_seed) for t in TASKS} if per_seed
                       else {t: None for t in TASKS})
            row["delta_m"] = statistics.fmean(deltas) if deltas else None
            row["seeds"] = len(per_seed)
            if len(per_seed) > 1:
                row.update({f"{t}_std": statistics.stdev(m[t] for m in per_seed) for t in TASKS})
                row["delta_m_std"] = statistics.stdev(deltas) if len(deltas) > 1 else None
        row.update(metrics)
        row.update({"params_m_paper": paper.params_m, "semseg_paper": paper.semseg,
                    "human_parts_paper": paper.human_parts, "sal_paper": paper.sal, "normals_paper": paper.normals,
                    "delta_m_paper": paper.delta_m})
        out.append(row)
    return out


def _f(v: float | None, digits: int = 2, sign: bool = False, std: float | None = None) -> str:
    if v is None:
        return "–"
    cell = f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"
    return cell if std is None else f"{cell} ± {std:.{digits}f}"


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    cols = ["Method", "Params (M)", "paper"]
    for _t, title in COLUMNS:
        cols += [title, "paper"]
    cols += ["Δm %", "paper"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(cols) - 1)) + "|"]
    for r in rows:
        seeds = f" ({r['seeds']} seeds)" if r.get("seeds", 1) > 1 else ""
        cells = [r["method"] + seeds + ("" if r["status"] == "finished" else f" ({r['status']})"),
                 _f(r["params_m"]), _f(r["params_m_paper"])]
        for t, _title in COLUMNS:
            cells += [_f(r[t], std=r.get(f"{t}_std")), _f(r[f"{t}_paper"])]
        cells += [_f(r["delta_m"], sign=True, std=r.get("delta_m_std")), _f(r["delta_m_paper"], sign=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


CSV_FIELDS = ["method", "key", "status", "seeds", "params_m", "params_m_paper", "semseg", "semseg_std", "semseg_paper",
              "human_parts", "human_parts_std", "human_parts_paper", "sal", "sal_std", "sal_paper", "normals",
              "normals_std", "normals_paper", "delta_m", "delta_m_std", "delta_m_paper"]




def write_results(plan: Plan, results: dict[str, RowResult], parent: str,
                  results_dir: Path | None = None) -> tuple[str, list[Path]]:
    """Write ``polyhistor_<preset>.md/.csv``, log Δm to the child runs and the table to the parent."""
    from common import tracking

    trivial = None
    try:
        trivial = trivial_row_metrics(plan)
    except Exception as err:  # the table of the trained rows is still worth writing
        print(f"[reproduce] no trivial row: {type(err).__name__}: {err}")
    rows = table_rows(results, trivial)
    client = tracking.client()
    for r in rows:
        if r["delta_m"] is None:
            continue
        own = ({f"single_task_{t}": r["delta_m"] for t in TASKS} if r["key"] == "single_task" else
               r.get("delta_m_of", {}))
        for k, d in own.items():
            res = results.get(k)
            if res is not None and res.run_id and not res.reused:
                client.log_metric(res.run_id, "val/delta_m", float(d))
        client.log_metric(parent, f"table/{r['key']}/delta_m", float(r["delta_m"]))
        if r["params_m"] is not None:
            client.log_metric(parent, f"table/{r['key']}/params_m", float(r["params_m"]))
    trained = sum(res.seconds for res in results.values())
    cpu = sum(res.cpu_seconds or 0.0 for res in results.values())
    header = (f"# Polyhistor table, `{plan.preset}` preset\n\n"
              f"Data: {plan.info.get('data') or 'ShapesWorld PASCAL_MT (generated)'}; generated "
              f"{time.strftime('%Y-%m-%d %H:%M')}, git {tracking.git_sha(short=True)}, MLflow parent run `{parent}`; "
              f"row times summed {trained / 60:.1f} min (rows may run in parallel), {cpu / 60:.1f} min CPU. Metrics on val; Δm against our "
              "single-task rows; "
              + (f"trivial: the constant predictor of each task on the same val split (background everywhere; "
                 f"saliency: every pixel {'salient' if trivial['sal_constant'] else 'not salient'}, the constant the "
                 f"saliency metric scores best; normals: the split's mean normal); " if trivial else "")
              + "paper: Swin-T on PASCAL-Context (Polyhistor's table as MTLoRA reprints it).")
    md = markdown(rows, header)
    return md, save_table(plan, md, rows_to_csv(rows, CSV_FIELDS, digits=6), results_dir)
