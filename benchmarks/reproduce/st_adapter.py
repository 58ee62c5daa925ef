"""ST-Adapter's table: K400 (appearance) and SSv2 (motion) rows, ST-Adapter beside the linear probe and full FT.

Rows come from ``st_adapter/configs/<preset>/`` (:mod:`st_adapter.configs.generate`): for each dataset the
ST-Adapter row, the frozen frame-mean linear probe and full fine-tuning (``tiny``/``smoke``: 8 (4) frames by
default; ``--rows`` also reaches the 16-frame tiny rows; ``paper``: every ViT-B/16 and ViT-L/14 row).

Data:

* ``tiny``: the ShapesWorld Kinetics-400 and SSv2 sets at their default places (``outputs/data/kinetics400``,
  ``outputs/data/ssv2``), written on first use, and the ShapesWorld-pretrained ``shapes-clip-tiny``;
* ``smoke``: a very small ShapesWorld pair under ``outputs/data/{kinetics400,ssv2}-smoke`` (2 videos per class);
* ``--data``: the real datasets, either ``k400=/path/to/kinetics400,ssv2=/path/to/ssv2`` or one folder holding
  ``kinetics400/`` and/or ``ssv2/``; rows of a dataset that is not given are left out (with a message).

The score of a row is the multi-view top-1 accuracy on the validation split after the last epoch (``val/acc1``,
softmax averaged over the views, the official protocol), beside the paper's ViT-B/16 figure. Every dataset's rows
end with a chance row (``1 / classes``, the class count read from the dataset the rows train on). At the ``tiny``
preset the SSv2 rows run with 3 seeds (:data:`TINY_SSV2_SEEDS`; the table shows mean ± std, the CSV each seed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.reproduce import (
    DataCheckError,
    Plan,
    Row,
    RowResult,
    _data_override,
    _resolve,
    check_datamodules,
    mean_std,
    rows_to_csv,
    save_table,
)
from common.paths import data_dir, project_root
from st_adapter.configs.generate import Setting, settings

DATASET_DIRS = {"k400": "kinetics400", "ssv2": "ssv2"}
DATASET_LABEL = {"k400": "K400 (appearance)", "ssv2": "SSv2 (motion)"}
METHOD_LABEL = {"st_adapter": "ST-Adapter", "linear_probe": "Linear probe (frozen, frame mean)",
                "full_finetune": "Full fine-tuning"}
#: paper top-1 (ViT-B/16 unless the row says otherwise) and how sure we are of it (st_adapter/README.md, 'Paper figures')
PAPER_TOP1: dict[tuple[str, str, int, str], tuple[float, str]] = {
    ("k400", "ViT-B-16", 8, "st_adapter"): (82.0, "paper; released code 82.2"),
    ("k400", "ViT-B-16", 32, "st_adapter"): (82.7, "[?]"),
    ("k400", "ViT-L-14", 8, "st_adapter"): (86.9, "[?]"),
    ("k400", "ViT-L-14", 32, "st_adapter"): (87.2, "[?] third-party listing"),
    ("ssv2", "ViT-B-16", 8, "st_adapter"): (67.1, "[?]; released code 66.9"),
    ("ssv2", "ViT-B-16", 32, "st_adapter"): (69.5, "third-party quote"),
    ("ssv2", "ViT-L-14", 32, "st_adapter"): (72.3, "third-party quote"),
}
#: relative cost of a tiny row (for the ETA before the first row finished)
COST = {"st_adapter": 1.0, "linear_probe": 0.45, "full_finetune": 1.3}
#: how to give the datasets (the Makefile's DATA=, the driver's --data)
DATA_HELP = ("give them as DATA=k400=/path/to/kinetics400,ssv2=/path/to/ssv2 or DATA=/path/holding/kinetics400+ssv2 "
             "(make reproduce-st-adapter PRESET=paper DATA=...; python -m benchmarks.reproduce st_adapter --data ...); "
             "layouts: Kinetics-400 as `path label` lists (train.txt, val.txt, labels.csv) or the official CSVs, "
             "Something-Something-v2 as videos + labels/{labels,train,validation}.json (README.md, Datasets)")
#: seeds of the tiny SSv2 rows (the first is the configs' own ``seed_everything``; its row keeps the plain key)
TINY_SSV2_SEEDS = (42, 43, 44)
SMOKE_WRITER = {"num_per_class": 2, "val_per_class": 1, "frames": 8, "size": 32}


def _config(s: Setting) -> str:
    return str(s.path.relative_to(project_root()))


def row_key(s: Setting, seed: int | None = None) -> str:
    """``<dataset>_<setting>``, with ``_seed<S>`` for a seed other than the config's own."""
    return f"{s.dataset}_{s.name}" + (f"_seed{seed}" if seed is not None else "")


def seeds_of(s: Setting) -> tuple[int | None, ...]:
    """The seeds a setting's rows run with: None is the config's ``seed_everything``; tiny SSv2 rows get 3."""
    if s.preset == "tiny" and s.dataset == "ssv2":
        return (None,) + TINY_SSV2_SEEDS[1:]
    return (None,)


def parse_data(data: str | None) -> dict[str, Path]:
    """``k400=PATH,ssv2=PATH`` or a folder with ``kinetics400/`` / ``ssv2/`` -> ``{dataset: root}``."""
    if not data:
        return {}
    if "=" in data:
        out = {}
        for part in data.split(","):
            key, _, path = part.partition("=")
            key = key.strip().lower()
            if key not in DATASET_DIRS:
                raise DataCheckError(f"DATA={data}: unknown dataset {key!r}; {DATA_HELP}")
            out[key] = Path(path).expanduser()
        return out
    root = Path(data).expanduser()
    found = {ds: root / d for ds, d in DATASET_DIRS.items() if (root / d).is_dir()}
    if not found:
        what = "does not exist" if not root.exists() else f"holds neither of {sorted(DATASET_DIRS.values())}"
        raise DataCheckError(f"DATA={data}: {root} {what}; {DATA_HELP}")
    return found


def _default_rows(s: Setting) -> bool:
    return s.preset == "paper" or s.frames == min(x.frames for x in settings() if x.preset == s.preset)


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    """The rows of ``preset`` (default rows, or the ``only`` keys) with their data overrides."""
    roots = parse_data(data)
    if preset == "paper" and not roots:
        raise DataCheckError(f"ST-Adapter's paper preset needs the real datasets and no DATA= was given; {DATA_HELP}")
    candidates = [s for s in settings() if s.preset == preset]
    keys = {row_key(s): s for s in candidates}
    if only:
        unknown = set(only) - set(keys)
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {sorted(keys)}")
        chosen = [keys[k] for k in only]
    else:
        chosen = [s for s in candidates if _default_rows(s)]
    rows, skipped, by_key, seed_of = [], [], {}, {}
    for s, seed in [(st, sd) for st in chosen for sd in seeds_of(st)]:
        overrides: list[str] = [] if seed is None else [f"--seed_everything={seed}"]
        if roots:
            if s.dataset not in roots:
                skipped.append(row_key(s, seed))
                continue
            overrides += [f"--data.init_args.root={roots[s.dataset]}", "--data.init_args.synth_if_missing=false"]
        elif preset == "smoke":
            overrides.append(f"--data.init_args.root={data_dir() / (DATASET_DIRS[s.dataset] + '-smoke')}")
        label = (f"{DATASET_LABEL[s.dataset]}: {METHOD_LABEL[s.method]}, {s.arch}, {s.frames} frames"
                 + (f", seed {seed}" if seed is not None else ""))
        by_key[row_key(s, seed)] = s
        seed_of[row_key(s, seed)] = seed
        rows.append(Row(row_key(s, seed), label, _config(s), overrides,
                        COST[s.method] * s.frames / 8 * (2.0 if s.dataset == "ssv2" else 1.0)))
    if skipped:
        print(f"[reproduce] no data given for: {', '.join(skipped)} (left out)")
    # motion rows first (they carry the headline comparison), then ST-Adapter, probe, full FT; fewer frames first;
    # the config's own seed of every row before the extra seeds (a cut run already holds one seed of each)
    order = {m: i for i, m in enumerate(METHOD_LABEL)}
    rows.sort(key=lambda r: (seed_of[r.key] is not None, by_key[r.key].dataset != "ssv2", by_key[r.key].arch,
                             by_key[r.key].frames, order[by_key[r.key].method]))
    # tiny: two 1-thread rows at once use a 2-core machine best (12 rows with the SSv2 seeds)
    plan = Plan("st_adapter", preset, rows, cli_module="st_adapter", experiment="st_adapter",
                info={"data": data, "settings": by_key, "seeds": seed_of}, jobs=2 if preset == "tiny" else 1)
    plan.prepare = lambda: prepare(plan)
    if roots:  # the real (or given) datasets: each one's layout checked before the first row
        plan.check = lambda: check_datamodules(
            plan, f"ST-Adapter's {preset} preset reads DATA={data}", DATA_HELP[0].upper() + DATA_HELP[1:] + ".")
    return plan


def prepare(plan: Plan) -> None:
    """Write the ShapesWorld sets the rows read (if missing) and build ``shapes-clip-tiny`` (if needed)."""
    from common.data.synth.video_writers import write_kinetics400, write_ssv2

    writers = {"k400": write_kinetics400, "ssv2": write_ssv2}
    need_pretrained = set()
    for row in plan.rows:
        cfg = yaml.safe_load((project_root() / row.config).read_text())
        s: Setting = plan.info["settings"][row.key]
        pre = cfg["model"]["init_args"].get("pretrained")
        if isinstance(pre, str) and pre.startswith("shapes-"):
            need_pretrained.add(pre)
        if plan.info.get("data"):
            continue
        if plan.preset == "smoke":
            root = data_dir() / (DATASET_DIRS[s.dataset] + "-smoke")
            if not root.exists():
                print(f"[reproduce] writing a small ShapesWorld {s.dataset} to {root}")
                writers[s.dataset](root, progress=False, **SMOKE_WRITER)
        else:
            root = Path(cfg["data"]["init_args"].get("root") or data_dir() / DATASET_DIRS[s.dataset])
            if not root.exists():
                print(f"[reproduce] writing the ShapesWorld {s.dataset} to {root}")
                writers[s.dataset](root)
    if need_pretrained:
        from common.models import ensure_pretrained

        for name in sorted(need_pretrained):
            ensure_pretrained(name)


# ---------------------------------------------------------------------------------------------------------------- table
def table_rows(plan: Plan, results: dict[str, RowResult]) -> list[dict[str, Any]]:
    """One dict per finished or failed row, in plan order."""
    out = []
    for row in plan.rows:
        res = results.get(row.key)
        if res is None:
            continue
        s: Setting = plan.info["settings"][row.key]
        paper_frames = s.frames if s.preset == "paper" else {4: 8, 8: 8, 16: 32}[s.frames]
        paper_arch = s.arch if s.preset == "paper" else "ViT-B-16"
        paper = PAPER_TOP1.get((s.dataset, paper_arch, paper_frames, s.method))
        m = res.metrics if res.status == "finished" else {}
        cfg = yaml.safe_load((project_root() / row.config).read_text())["data"]["init_args"]
        views = cfg.get("val_clips", 1) * cfg.get("val_crops", 1)
        out.append({
            "key": row.key, "dataset": s.dataset, "method": s.method, "arch": s.arch, "frames": s.frames,
            "seed": plan.info.get("seeds", {}).get(row.key) or yaml.safe_load(
                (project_root() / row.config).read_text()).get("seed_everything"),
            "status": res.status, "trainable": res.trainable_params, "params_m": (res.trainable_params or 0) / 1e6 if res.trainable_params else None,
            "views": f"{cfg.get('val_crops', 1)}x{cfg.get('val_clips', 1)}" if views else "",
            "top1": 100 * m["val/acc1"] if "val/acc1" in m else None,
            "top5": 100 * m["val/acc5"] if "val/acc5" in m else None,
            "mean_class": 100 * m["val/mean_class_acc"] if "val/mean_class_acc" in m else None,
            "paper_top1": paper[0] if paper else None, "paper_note": paper[1] if paper else "",
            "paper_row": f"{paper_arch} {paper_frames}f" if paper else "", "run_id": res.run_id,
            "minutes": res.seconds / 60,
        })
    return out


def num_classes(row: Row) -> int | None:
    """The class count of the dataset a row trains on (its datamodule's class list), or None if unreadable."""
    import importlib

    cfg = yaml.safe_load(_resolve(row.config).read_text())["data"]
    module, _, name = cfg["class_path"].rpartition(".")
    init_args = {**(cfg.get("init_args") or {}), **_data_override(row.overrides)}
    try:
        return len(getattr(importlib.import_module(module), name)(**init_args).load_class_names())
    except Exception:  # the table still gets written; the chance row says "-"
        return None


def chance_rows(plan: Plan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``chance`` row per dataset of ``rows``: top-1 and mean class accuracy 1 / classes, top-5 min(5, C) / C."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        row = next(x for x in plan.rows if plan.info["settings"][x.key].dataset == ds)
        c = num_classes(row)
        out.append({"key": f"{ds}_chance", "dataset": ds, "method": "chance", "arch": "-", "frames": "",
                    "seed": "", "status": "", "trainable": 0, "params_m": 0.0, "views": "", "classes": c,
                    "top1": 100 / c if c else None, "top5": 100 * min(5, c) / c if c else None,
                    "mean_class": 100 / c if c else None, "paper_top1": None, "paper_note": "", "paper_row": "",
                    "run_id": "", "minutes": 0.0})
    return out


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def headline(rows: list[dict[str, Any]]) -> str:
    """'ST-Adapter vs the frozen frame-mean probe' per dataset, the comparison the paper's method exists for."""
    import statistics

    lines = []
    for ds in ("ssv2", "k400"):
        trained = [r for r in rows if r["dataset"] == ds and r["method"] != "chance"]
        fewest = min((x["frames"] for x in trained), default=0)
        top1: dict[str, list[float]] = {}
        for r in trained:
            if r["frames"] == fewest and r["top1"] is not None:
                top1.setdefault(r["method"], []).append(r["top1"])
        st, lp = top1.get("st_adapter"), top1.get("linear_probe")
        if st and lp:
            st_m, lp_m = statistics.mean(st), statistics.mean(lp)
            lines.append(f"- {DATASET_LABEL[ds]}: ST-Adapter {st_m:.1f} vs frozen frame-mean probe {lp_m:.1f} top-1 "
                         f"({st_m - lp_m:+.1f} points" + (", means over seeds)" if len(st) + len(lp) > 2 else ")"))
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    """The table: one line per setting (seeds of a setting in one cell, mean ± std), a chance row after each
    dataset's rows."""
    lines = [header, "", headline(rows), "",
             "| Dataset | Method | Backbone | Frames | Views (crops x clips) | Trainable (M) | Seeds | Top-1 | Top-5 | "
             "Mean class acc | Paper top-1 | Paper row | Minutes | Status |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r["arch"], r["frames"]), []).append(r)
    for (ds, method, arch, frames), rs in groups.items():
        r = rs[0]
        if method == "chance":
            lines.append(f"| {DATASET_LABEL[ds]} | Chance (1 / {r['classes'] or '?'} classes) | - | | | 0 | | "
                         f"{_f(r['top1'])} | {_f(r['top5'])} | {_f(r['mean_class'])} | - | - | | |")
            continue
        done = [x for x in rs if x["status"] == "finished"]

        def cell(k: str, done: list[dict[str, Any]] = done) -> str:
            return mean_std([x[k] for x in done if x[k] is not None])

        paper = _f(r["paper_top1"]) + (f" ({r['paper_note']})" if r["paper_note"] else "")
        status = "finished" if len(done) == len(rs) else f"{len(done)}/{len(rs)} finished"
        lines.append(f"| {DATASET_LABEL[ds]} | {METHOD_LABEL[method]} | {arch} | {frames} | {r['views']} | "
                     f"{_f(r['params_m'], '{:.3f}')} | {len(rs)} | {cell('top1')} | {cell('top5')} | "
                     f"{cell('mean_class')} | {paper} | {r['paper_row'] or '-'} | "
                     f"{sum(x['minutes'] for x in rs):.1f} | {status} |")
    return "\n".join(lines)


CSV_FIELDS = ["key", "dataset", "method", "arch", "frames", "seed", "classes", "views", "status", "trainable", "params_m", "top1", "top5",
              "mean_class", "paper_top1", "paper_row", "paper_note", "minutes", "run_id"]




def write_results(plan: Plan, results: dict[str, RowResult], parent: str,
                  results_dir: Path | None = None) -> tuple[str, list[Path]]:
    """Write ``st_adapter_<preset>.md/.csv`` and log the table's numbers to the parent run."""
    from common import tracking

    rows = table_rows(plan, results)
    # each dataset's chance row after its last row
    chance = {r["dataset"]: r for r in chance_rows(plan, rows)}
    rows = [x for i, r in enumerate(rows) for x in ([r, chance[r["dataset"]]] if all(
        o["dataset"] != r["dataset"] for o in rows[i + 1:]) else [r])]
    client = tracking.client()
    for r in rows:
        if r["top1"] is not None:
            client.log_metric(parent, f"table/{r['key']}/top1", float(r["top1"]))
    data = plan.info.get("data") or ("ShapesWorld Kinetics-400 (12 colour x shape classes) and SSv2 "
                                     "(8 motion/direction classes), generated")
    trained = sum(res.seconds for res in results.values())
    header = (f"# ST-Adapter table, `{plan.preset}` preset\n\n"
              f"Data: {data}; generated {time.strftime('%Y-%m-%d %H:%M')}, git {tracking.git_sha(short=True)}, "
              f"MLflow parent run `{parent}`; training time of the rows {trained / 60:.1f} min. Top-1 on the "
              "validation split after the last epoch, softmax averaged over the views. The paper column is the "
              "paper's figure on the real dataset (ViT-B/16 for the tiny rows); sources in st_adapter/README.md. "
              "Seeds: rows with several show mean ± std over them (per seed in the CSV); Minutes: all seeds together. "
              "Chance: 1 / classes (top-5: min(5, classes) / classes).")
    md = markdown(rows, header)
    return md, save_table(plan, md, rows_to_csv(rows, CSV_FIELDS), results_dir)
