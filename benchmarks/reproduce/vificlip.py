"""ViFi-CLIP's K400 rows: vanilla zero-shot CLIP, image-FT, text-FT and ViFi-CLIP (all classes), and the
bridge-and-prompt stage on the base classes, each with the paper's figure beside it.

Rows are the configs ``vificlip/configs/<preset>/k400/`` (:mod:`vificlip.configs.generate`); one row = one CLI run =
one MLflow child run. The vanilla zero-shot rows train nothing and run ``validate`` (on all classes, and with
``class_split`` base / novel: the zero-shot base / novel / harmonic mean); the others run ``fit`` and report the
validation top-1 after the last epoch.

Setting: the configs provide the fully supervised K400 setting (image-FT / text-FT / ViFi-CLIP train and validate
on all classes) and bridge-and-prompt trained and validated on the base half of the classes; no config evaluates a
trained model on the novel classes yet, so the base-to-novel table exists for the zero-shot rows only (the header
says so).

Data:

* ``tiny``: the ShapesWorld Kinetics-400 stand-in (``outputs/data/kinetics400``, written on first use) and the
  ShapesWorld-pretrained ``shapes-clip-tiny``;
* ``smoke``: a very small ShapesWorld Kinetics-400 (``outputs/data/kinetics400-smoke``, 2 videos a class), random-init
  tiny CLIP, two training batches a row: a pipeline check, not a result;
* ``paper`` (``DATA=`` required): the Kinetics-400 root (``path label`` lists + class CSV), ViT-B/16 from OpenAI.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.reproduce import (
    DataCheckError,
    Plan,
    Row,
    RowResult,
    check_datamodules,
    rows_to_csv,
    save_table,
)
from common.paths import data_dir, project_root

#: method key -> (label, config file stem suffix, CLI command, class split of the evaluation, paper top-1 K400)
METHODS: dict[str, tuple[str, str, str, str, float | None]] = {
    "zero_shot": ("Vanilla zero-shot CLIP", "zero-shot", "validate", "all", None),
    "zero_shot_base": ("Vanilla zero-shot CLIP", "zero-shot", "validate", "base", None),
    "zero_shot_novel": ("Vanilla zero-shot CLIP", "zero-shot", "validate", "novel", None),
    "image_ft": ("Image-FT (vision tower fine-tuned)", "image-ft", "fit", "all", 82.8),
    "text_ft": ("Text-FT (text tower fine-tuned)", "text-ft", "fit", "all", 73.1),
    "vificlip": ("ViFi-CLIP (both towers fine-tuned)", "vificlip", "fit", "all", 83.9),
    "b2n_prompting": ("Bridge-and-prompt (deep V+L prompts)", "b2n-prompting", "fit", "base", None),
}
#: the paper's base-to-novel K400 figures (vificlip/README.md, 'Paper figures'): ViFi-CLIP base / novel / HM
PAPER_B2N_VIFICLIP = (76.4, 61.1, 67.9)
COST = {"validate": 0.2, "fit": 1.0}
DATA_HELP = ("give it as DATA=/path/to/kinetics400 (make reproduce-vificlip PRESET=paper DATA=...; python -m "
             "benchmarks.reproduce vificlip --data ...); layout: Kinetics-400 as `path label` lists (train.txt, "
             "val.txt) and an `id,name` class CSV at the root (vificlip/README.md, How to run)")
SMOKE_WRITER = {"num_per_class": 2, "val_per_class": 1, "frames": 8, "size": 32}


def _config(preset: str, suffix: str) -> Path | None:
    found = sorted((project_root() / "vificlip" / "configs" / preset / "k400").glob(f"*_{suffix}.yaml"))
    return found[0] if found else None


def _root(preset: str, data: str | None) -> Path | None:
    if data:
        return Path(data).expanduser()
    return data_dir() / "kinetics400-smoke" if preset == "smoke" else None


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    if preset == "paper" and not data:
        raise DataCheckError(f"ViFi-CLIP's paper preset needs the real Kinetics-400 and no DATA= was given; "
                             f"{DATA_HELP}")
    if preset != "paper" and data:
        raise DataCheckError(f"DATA= is read by the paper preset only (the {preset} preset trains on ShapesWorld); "
                             f"{DATA_HELP}")
    if data and not Path(data).expanduser().is_dir():
        raise DataCheckError(f"DATA={data}: {Path(data).expanduser()} does not exist; {DATA_HELP}")
    root = _root(preset, data)
    rows = []
    for key, (label, suffix, command, split, _) in METHODS.items():
        cfg = _config(preset, suffix)
        if cfg is None:
            continue
        overrides = []
        if root is not None:
            overrides.append(f"--data.init_args.root={root}")
        if data:
            overrides.append("--data.init_args.synth_if_missing=false")
        if command == "validate" and split != "all":
            overrides.append(f"--data.init_args.class_split={split}")
        if preset == "tiny":
            overrides.append("--trainer.enable_progress_bar=false")
        rows.append(Row(key, f"{label} ({split} classes)", str(cfg.relative_to(project_root())), overrides,
                        COST[command], command=command))
    if only:
        unknown = set(only) - {r.key for r in rows}
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {[r.key for r in rows]}")
        rows = [r for r in rows if r.key in only]
    plan = Plan("vificlip", preset, rows, cli_module="vificlip", experiment="vificlip", info={"data": data})
    plan.prepare = lambda: prepare(plan)
    if data:
        plan.check = lambda: check_datamodules(
            plan, f"ViFi-CLIP's {preset} preset reads DATA={data}", DATA_HELP[0].upper() + DATA_HELP[1:] + ".")
    return plan


def prepare(plan: Plan) -> None:
    """Write the ShapesWorld Kinetics-400 the rows read (if missing) and build ``shapes-clip-tiny`` (if needed)."""
    need_pretrained = set()
    for row in plan.rows:
        pre = yaml.safe_load((project_root() / row.config).read_text())["model"]["init_args"].get("pretrained")
        if isinstance(pre, str) and pre.startswith("shapes-"):
            need_pretrained.add(pre)
    if not plan.info.get("data") and plan.rows:
        from common.data.synth.video_writers import write_kinetics400

        if plan.preset == "smoke":
            root = data_dir() / "kinetics400-smoke"
            if not root.exists():
                print(f"[reproduce] writing a small ShapesWorld Kinetics-400 to {root}")
                write_kinetics400(root, progress=False, **SMOKE_WRITER)
        else:
            root = data_dir() / "kinetics400"
            if not root.exists():
                print(f"[reproduce] writing the ShapesWorld Kinetics-400 to {root}")
                write_kinetics400(root)
    if need_pretrained:
        from common.models import ensure_pretrained

        for name in sorted(need_pretrained):
            ensure_pretrained(name)


# ---------------------------------------------------------------------------------------------------------------- table
def _num_classes(plan: Plan, row: Row) -> int | None:
    """Classes the row is evaluated on (its datamodule's ``class_names``, which reads only the class list)."""
    import importlib

    from benchmarks.reproduce import _data_override

    try:
        cfg = yaml.safe_load((project_root() / row.config).read_text())["data"]
        init_args = {**(cfg.get("init_args") or {}), **_data_override(row.overrides)}
        module, _, name = cfg["class_path"].rpartition(".")
        dm = getattr(importlib.import_module(module), name)(**init_args)
        return len(dm.class_names)
    except Exception:
        return None


def _hm(base: float | None, novel: float | None) -> float | None:
    if base is None or novel is None or base + novel <= 0:
        return None
    return 2 * base * novel / (base + novel)


def table_rows(plan: Plan, results: dict[str, RowResult]) -> list[dict[str, Any]]:
    """One dict per row (CSV lines), chance lines first."""
    out, chance = [], {}
    for row in plan.rows:
        res = results.get(row.key)
        if res is None:
            continue
        label, _, command, split, paper = METHODS[row.key]
        if split not in chance:
            chance[split] = _num_classes(plan, row)
        m = res.metrics if res.status == "finished" else {}
        out.append({"key": row.key, "method": label, "command": command, "classes": split, "status": res.status,
                    "trainable": res.trainable_params, "top1": 100 * m["val/acc1"] if "val/acc1" in m else None,
                    "paper_top1": paper, "minutes": res.seconds / 60, "run_id": res.run_id})
    lines = [{"key": f"chance_{split}", "method": "chance", "command": "", "classes": split, "status": "",
              "trainable": 0, "top1": 100 / n if n else None, "paper_top1": None, "minutes": 0.0, "run_id": ""}
             for split, n in chance.items()]
    return lines + out


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(lines_: list[dict[str, Any]], header: str) -> str:
    by_key = {r["key"]: r for r in lines_}
    out = [header, "", "Fully supervised setting (train and validate on all classes; K400 in the paper):", "",
           "| Method | Trainable | Top-1 (all classes) | Paper (ViT-B/16, K400, 16 frames) |", "|---|---:|---:|---:|"]
    for r in lines_:
        if r["classes"] != "all":
            continue
        name = "Chance (1 / classes)" if r["method"] == "chance" else r["method"]
        name += " (failed)" if r["status"] == "failed" else ""
        trainable = "-" if r["method"] == "chance" or r["trainable"] is None else str(r["trainable"])
        out.append(f"| {name} | {trainable} | {_f(r['top1'])} | {_f(r['paper_top1'])} |")
    zb, zn = by_key.get("zero_shot_base"), by_key.get("zero_shot_novel")
    cb, cn = by_key.get("chance_base"), by_key.get("chance_novel")
    bp = by_key.get("b2n_prompting")
    if zb or zn or bp:
        out += ["", "Base-to-novel setting (the datamodule's seeded base / novel halves of the classes). Only the "
                "zero-shot rows are evaluated on the novel classes (no config evaluates a trained model on them "
                "yet); bridge-and-prompt trains and validates on the base classes:", "",
                "| Method | Base | Novel | HM | Paper K400 base / novel / HM |", "|---|---:|---:|---:|---|"]
        if cb or cn:
            b, n = (cb or {}).get("top1"), (cn or {}).get("top1")
            out.append(f"| Chance (1 / classes) | {_f(b)} | {_f(n)} | {_f(_hm(b, n))} | - |")
        if zb or zn:
            b, n = (zb or {}).get("top1"), (zn or {}).get("top1")
            out.append(f"| Vanilla zero-shot CLIP | {_f(b)} | {_f(n)} | {_f(_hm(b, n))} | - |")
        if bp:
            out.append(f"| {bp['method']}{' (failed)' if bp['status'] == 'failed' else ''} | {_f(bp['top1'])} | "
                       "- | - | - (K400 not reported; HMDB-51 77.1 / 54.9 / 64.1) |")
        out.append("| ViFi-CLIP (base-trained) | not run | not run | not run | "
                   + " / ".join(f"{v:.1f}" for v in PAPER_B2N_VIFICLIP) + " |")
    out += ["", "Paper figures: vificlip/README.md ('Paper figures', from the official repository's tables)."]
    return "\n".join(out)


CSV_FIELDS = ["key", "method", "command", "classes", "status", "trainable", "top1", "paper_top1", "minutes", "run_id"]




def write_results(plan: Plan, results: dict[str, RowResult], parent: str,
                  results_dir: Path | None = None) -> tuple[str, list[Path]]:
    """Write ``vificlip_<preset>.md/.csv`` and log every row's top-1 to the parent run."""
    from common import tracking

    lines_ = table_rows(plan, results)
    client = tracking.client()
    for r in lines_:
        if r["top1"] is not None and r["method"] != "chance":
            client.log_metric(parent, f"table/{r['key']}/top1", float(r["top1"]))
    data = plan.info.get("data") or {"smoke": "a small ShapesWorld Kinetics-400 stand-in (2 videos a class), generated",
                                     "tiny": "the ShapesWorld Kinetics-400 stand-in, generated"}[plan.preset]
    model = {"smoke": "random-init tiny CLIP, 2 training batches a row: a pipeline check, not a result",
             "tiny": "the ShapesWorld-pretrained shapes-clip-tiny",
             "paper": "ViT-B/16 (OpenAI CLIP)"}[plan.preset]
    trained = statistics.fsum(res.seconds for res in results.values())
    header = (f"# ViFi-CLIP table, `{plan.preset}` preset\n\n"
              f"Data: {data}; model: {model}. Generated {time.strftime('%Y-%m-%d %H:%M')}, git "
              f"{tracking.git_sha(short=True)}, MLflow parent run `{parent}`; time of the rows {trained / 60:.1f} min. "
              "Top-1 (%) on the validation split after the last epoch (vanilla zero-shot: `validate`, nothing "
              "trained). Setting: what the configs provide, the fully supervised one (all classes) and base-to-novel "
              "for the zero-shot and bridge-and-prompt rows only (see below).")
    md = markdown(lines_, header)
    return md, save_table(plan, md, rows_to_csv(lines_, CSV_FIELDS), results_dir)
