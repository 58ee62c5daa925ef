"""MaskCLIP's comparison on one set of proposals and class names: a trivial row, crop-and-classify, MaskCLIP without
RMA and MaskCLIP (RMA trained), each scored by panoptic PQ / SQ / RQ (all, things, stuff, novel) and semantic mIoU,
with the paper's zero-shot figures beside ours.

Rows are the configs ``maskclip/configs/<preset>/{crop_classify,no_rma,maskclip}.yaml``
(:mod:`maskclip.configs.generate`); one row = one CLI run = one MLflow child run with its panoptic overlay pictures.
Crop-and-classify and MaskCLIP without RMA train nothing and run ``validate``; MaskCLIP runs ``fit`` (RMA trained on
the base classes) and is read after its last validation, once per seed (tiny: 3 seeds, mean ± standard deviation).
The trivial row needs no model: every validation image is one segment of the stuff class that covers the most
training pixels (computed here, scored by the same :class:`common.metrics.panoptic.COCOPanopticQuality`).

Data:

* ``tiny``: ShapesWorld COCO-panoptic (``outputs/data/coco_panoptic-tiny``, 400 training / 100 validation images,
  written on first use) with the writer's novel classes held out of training, ``shapes-clip-tiny``, the tiny
  ShapesWorld Mask2Former proposals;
* ``smoke``: 16 / 8 ShapesWorld images (``outputs/data/coco_panoptic-smoke``), random-init CLIP and proposals, two
  training batches: a pipeline check, not a result;
* ``paper`` (``DATA=`` required): COCO panoptic 2017 (all 133 classes trained, as the paper), ViT-L/14@336 and the
  R50 proposals; the zero-shot ADE20K-150 evaluation is ``maskclip/configs/paper/ade20k150_*.yaml``.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.reproduce import (
    Plan,
    Row,
    RowResult,
    check_data_arg,
    check_datamodules,
    mean_std,
    rows_to_csv,
    save_table,
)
from common.paths import data_dir, project_root

#: method -> (label, CLI command)
METHODS: dict[str, tuple[str, str]] = {
    "crop_classify": ("Crop-and-classify (one CLIP pass per proposal)", "validate"),
    "no_rma": ("MaskCLIP without RMA (mask class tokens only)", "validate"),
    "maskclip": ("MaskCLIP (mask class tokens + RMA, RMA trained)", "fit"),
}
SEEDS = {"smoke": (0,), "tiny": (0, 1, 2), "paper": (0,)}
COST = {"validate": 0.3, "fit": 1.0}
WRITER = {"smoke": {"num_train": 16, "num_val": 8, "size": 64}, "tiny": {"num_train": 400, "num_val": 100, "size": 64}}
#: the paper's zero-shot figures (trained on COCO panoptic; maskclip/README.md "Paper figures")
PAPER = [("ADE20K-150 panoptic PQ", 15.1), ("ADE20K-150 mIoU", 23.7), ("ADE20K-847 mIoU", 8.2),
         ("PASCAL-Context-459 mIoU", 10.0), ("PASCAL-Context-59 mIoU", 45.9)]
METRICS = [("pq", "PQ"), ("sq", "SQ"), ("rq", "RQ"), ("pq_th", "PQ things"), ("pq_st", "PQ stuff"),
           ("pq_novel", "PQ novel"), ("miou", "mIoU")]
DATA_HELP = ("give it as DATA=/path/to/coco (make reproduce-maskclip PRESET=paper DATA=...; python -m "
             "benchmarks.reproduce maskclip --data ...); layout: COCO panoptic 2017 (train2017/, val2017/, "
             "annotations/panoptic_{train,val}2017.json and PNG folders), and the R50 proposal checkpoint at "
             "model.init_args.proposals (maskclip/README.md, How to run)")


def _root(preset: str, data: str | None) -> Path | None:
    if data:
        return Path(data).expanduser()
    return data_dir() / f"coco_panoptic-{preset}" if preset in WRITER else None


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    check_data_arg("MaskCLIP", preset, data, "COCO panoptic", DATA_HELP, must_exist=data)
    root = _root(preset, data)
    rows = []
    for method, (label, command) in METHODS.items():
        cfg = f"maskclip/configs/{preset}/{method}.yaml"
        seeds = SEEDS[preset] if command == "fit" else (0,)
        for seed in seeds:
            overrides = [f"--data.init_args.root={root}", "--data.init_args.synth_if_missing=false",
                         f"--seed_everything={seed}"]
            if preset == "tiny":
                overrides.append("--trainer.enable_progress_bar=false")
            key = f"{method}_s{seed}" if len(seeds) > 1 else method
            rows.append(Row(key, label + (f", seed {seed}" if len(seeds) > 1 else ""), cfg, overrides,
                            COST[command], command=command))
    if only:
        unknown = set(only) - {r.key for r in rows} - {"trivial"}
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {['trivial'] + [r.key for r in rows]}")
        rows = [r for r in rows if r.key in only]
    plan = Plan("maskclip", preset, rows, cli_module="maskclip", experiment="maskclip",
                info={"data": data, "root": str(root), "trivial": not only or "trivial" in only},
                jobs=3 if preset == "tiny" else 1)  # tiny: the three seeds at once, one thread each
    plan.prepare = lambda: prepare(plan)
    if data:
        plan.check = lambda: check_datamodules(
            plan, f"MaskCLIP's {preset} preset reads DATA={data}", DATA_HELP[0].upper() + DATA_HELP[1:] + ".")
    return plan


def _row_data(row: Row) -> dict[str, Any]:
    import yaml

    from benchmarks.reproduce import _data_override

    cfg = yaml.safe_load((project_root() / row.config).read_text())
    return {**(cfg["data"].get("init_args") or {}), **_data_override(row.overrides)}


def prepare(plan: Plan) -> None:
    """Write the ShapesWorld COCO-panoptic the rows read (if missing); build the tiny CLIP and proposals (if
    needed) before the first row, so that no row's time holds their pretraining."""
    import yaml

    if plan.preset in WRITER:
        root = Path(plan.info["root"])
        if not root.exists():
            from common.data.synth.coco_panoptic import write_coco_panoptic

            print(f"[reproduce] writing ShapesWorld COCO-panoptic ({WRITER[plan.preset]}) to {root}")
            write_coco_panoptic(root, progress=False, **WRITER[plan.preset])
    for row in plan.rows:
        m = yaml.safe_load((project_root() / row.config).read_text())["model"]["init_args"]
        if m.get("clip_pretrained") == "shapes-clip-tiny":
            from common.models import ensure_pretrained

            ensure_pretrained("shapes-clip-tiny")
        if m.get("proposals") == "shapes-mask2former-tiny":
            from maskclip.proposals import load_proposal_network

            load_proposal_network("shapes-mask2former-tiny")
        break  # one row tells: the preset's rows share CLIP and proposals


# ---------------------------------------------------------------------------------------------------------------- trivial
def trivial_metrics(data_args: dict[str, Any]) -> tuple[dict[str, float], str]:
    """Every validation image as one segment of the stuff class with the most training pixels (among the training
    classes): PQ / SQ / RQ and mIoU by the project's metric; returns the metrics and the class's name."""
    import torch

    from common.data.coco_panoptic import COCOPanopticDataModule
    from common.data.panoptic_categories import read_json
    from common.metrics.dense import SemSegMIoU
    from common.metrics.panoptic import COCOPanopticQuality

    dm = COCOPanopticDataModule(**{**data_args, "batch_size": 8, "num_workers": 0})
    dm.prepare_data()
    dm.setup("validate")
    info = dm.info
    area: dict[int, int] = {}
    class_of = {cid: i for i, cid in enumerate(info["category_ids"])}
    train_json = read_json(dm.split_files(dm.train_split)["json"])
    for ann in train_json["annotations"]:
        for s in ann["segments_info"]:
            k = class_of[int(s["category_id"])]
            area[k] = area.get(k, 0) + int(s.get("area", 0))
    stuff = [k for k in info["train_classes"] if not info["is_thing"][k]] or list(info["train_classes"])
    best = max(stuff, key=lambda k: area.get(k, 0))
    n = info["num_classes"]
    pq = COCOPanopticQuality(n, info["is_thing"], info["class_names"])
    sem = SemSegMIoU(n, ignore_index=-1, ignore_absent=True)
    for batch in dm.val_dataloader():
        for t in batch["targets"]:
            gt = torch.as_tensor(t["panoptic"])
            pred = {"panoptic": torch.ones_like(gt, dtype=torch.int32),
                    "segments_info": [{"id": 1, "category_id": best, "isthing": info["is_thing"][best]}]}
            pq.update([pred], [t])
            target = torch.full(gt.shape, -1, dtype=torch.long)
            for s in t["segments_info"]:
                target[gt == int(s["id"])] = int(s["category_id"])
            sem.update(torch.full_like(target, best), target)
    summary = pq.summary()
    out = {f"val/{k}{sfx}": float(summary[g][k]) for g, sfx in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))
           for k in ("pq", "sq", "rq")}
    novel = set(info["novel_classes"])
    rows = [r["pq"] for r in summary["per_class"] if r["class"] in novel and r["counted"]]
    out["val/pq_novel"] = float(sum(rows) / len(rows)) if rows else float("nan")
    out["val/miou"] = float(sem.compute())
    return out, info["class_names"][best]


# ---------------------------------------------------------------------------------------------------------------- table
def _finite(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def table_rows(plan: Plan, results: dict[str, RowResult]) -> list[dict[str, Any]]:
    """One dict per CSV line: the trivial row, then one per run."""
    out = []
    if plan.info.get("trivial"):
        data_args = _row_data(plan.rows[0]) if plan.rows else {"root": plan.info["root"]}
        metrics, name = trivial_metrics(data_args)
        out.append({"key": "trivial", "method": f"Trivial: the whole image as '{name}'", "seed": "",
                    "status": "computed", "trainable": 0, **{k: _finite(metrics.get(f"val/{k}")) for k, _ in METRICS},
                    "minutes": 0.0, "run_id": ""})
    for row in plan.rows:
        res = results.get(row.key)
        if res is None:
            continue
        method = row.config.rsplit("/", 1)[-1].removesuffix(".yaml")
        m = res.metrics if res.status == "finished" else {}
        seed = next((o.split("=", 1)[1] for o in row.overrides if o.startswith("--seed_everything=")), "")
        out.append({"key": row.key, "method": METHODS[method][0], "seed": seed, "status": res.status,
                    "trainable": res.trainable_params, **{k: _finite(m.get(f"val/{k}")) for k, _ in METRICS},
                    "minutes": res.seconds / 60, "run_id": res.run_id})
    return out


def markdown(lines_: list[dict[str, Any]], header: str) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in lines_:
        groups.setdefault(r["method"], []).append(r)
    cols = " | ".join(label for _, label in METRICS)
    out = [header, "", f"| Method | Seeds | Trainable | {cols} |", "|---|---:|---:|" + "---:|" * len(METRICS)]
    for method, rs in groups.items():
        ok = [r for r in rs if r["status"] in ("finished", "computed")]
        name = method + (f" ({len(rs) - len(ok)} failed)" if len(ok) < len(rs) else "")
        trainable = rs[0]["trainable"]
        cells = " | ".join(mean_std([r[k] for r in ok if r[k] is not None]) for k, _ in METRICS)
        out.append(f"| {name} | {len(ok) if rs[0]['seed'] != '' else '-'} | "
                   f"{'-' if trainable is None else trainable} | {cells} |")
    out += ["", "The paper's zero-shot figures (MaskCLIP, ViT-L/14@336 + R50 proposals, trained on COCO panoptic; "
            "other datasets than ours, for reference):", "",
            "| Benchmark | Paper |", "|---|---:|"] + [f"| {name} | {v:.1f} |" for name, v in PAPER]
    out += ["", "Paper figures: maskclip/README.md ('Paper figures', from the paper's tables)."]
    return "\n".join(out)


CSV_FIELDS = ["key", "method", "seed", "status", "trainable"] + [k for k, _ in METRICS] + ["minutes", "run_id"]


def write_results(plan: Plan, results: dict[str, RowResult], parent: str,
                  results_dir: Path | None = None) -> tuple[str, list[Path]]:
    """Write ``maskclip_<preset>.md/.csv`` and log every row's PQ and novel PQ to the parent run."""
    from common import tracking

    lines_ = table_rows(plan, results)
    client = tracking.client()
    for r in lines_:
        for k in ("pq", "pq_novel", "miou"):
            if r[k] is not None:
                client.log_metric(parent, f"table/{r['key']}/{k}", float(r[k]))
    data = plan.info.get("data") or {
        "smoke": "16 / 8 ShapesWorld COCO-panoptic images, generated",
        "tiny": "ShapesWorld COCO-panoptic (400 training / 100 validation images), generated"}[plan.preset]
    model = {"smoke": "random-init tiny CLIP and proposals, 2 training batches: a pipeline check, not a result",
             "tiny": "the ShapesWorld-pretrained shapes-clip-tiny and the tiny ShapesWorld Mask2Former proposals",
             "paper": "CLIP ViT-L/14@336 (OpenAI) and the R50 Mask2Former proposals"}[plan.preset]
    classes = ("trained on all 133 COCO classes, evaluated on COCO val" if plan.preset == "paper" else
               "RMA trained on the base classes ('other' as no-object), evaluated on all classes; PQ novel: the "
               "mean PQ of the writer's held-out classes (heart, crescent)")
    trained = statistics.fsum(res.seconds for res in results.values())
    header = (f"# MaskCLIP table, `{plan.preset}` preset\n\n"
              f"Data: {data}; model: {model}; {classes}. Generated {time.strftime('%Y-%m-%d %H:%M')}, git "
              f"{tracking.git_sha(short=True)}, MLflow parent run `{parent}`; time of the rows {trained / 60:.1f} "
              "min. Panoptic PQ / SQ / RQ (%, COCO panoptic evaluation) and semantic mIoU (%) on the validation "
              "split after the last step (crop-and-classify and no-RMA: `validate`, nothing trained); the same "
              "proposals and class names in every row; seeds: mean ± standard deviation.")
    md = markdown(lines_, header)
    return md, save_table(plan, md, rows_to_csv(lines_, CSV_FIELDS), results_dir)
