"""ViFi-CLIP's tables: fully supervised, base-to-novel (base / novel / HM) and cross-dataset zero-shot, with the
paper's figures beside ours and a chance row in each.

Rows are CLI runs of the configs ``vificlip/configs/<preset>/k400/`` (:mod:`vificlip.configs.generate`); one row = one
MLflow child run. Every trained method (image-FT, text-FT, ViFi-CLIP) is

* fitted on all classes of the Kinetics-400 stand-in (the fully supervised top-1, validated after the last epoch),
  and that last checkpoint validated on the **held-out class set** (``<method>_heldout``: cross-dataset zero-shot,
  the paper's K400 -> HMDB-51 / UCF-101);
* fitted on the **base** half of the classes (``<method>_b2n``, ``--data.init_args.class_split=base``: its base
  top-1) and that last checkpoint validated with the **novel** class names on the novel half
  (``<method>_b2n_novel``): base / novel / harmonic mean. Bridge-and-prompt (``prompting_b2n``) the same way.

A validation of a trained model is a ``validate`` row with ``checkpoint_of`` (:class:`benchmarks.reproduce.Row`): it
runs after its fit and again whenever that fit ran again. Vanilla zero-shot CLIP trains nothing: ``validate`` on all
classes, the base and novel halves and the held-out set. The trained rows run once per seed (``SEEDS``: 3 at
``tiny``; the first seed of every row before the second), the table shows mean ± std.

Data:

* ``tiny``: the ShapesWorld Kinetics-400 stand-in (``outputs/data/kinetics400``: 12 classes, red / green / blue x
  circle / square / star / triangle) and the held-out class set (``outputs/data/kinetics400-heldout``: yellow /
  orange / purple x hexagon / diamond / cross / ring, same layout), both written on first use; ``shapes-clip-tiny``;
* ``smoke``: both very small (2 training videos a class), random-init tiny CLIP, two training batches a row: a pipeline
  check, not a result;
* ``paper`` (``DATA=`` required): the Kinetics-400 root (``path label`` lists + class CSV, and ViFi-CLIP's published
  base-to-novel files: ``fs_base_s{1,2,3}_train.txt``, ``base_val.txt``, ``novel_val.txt``,
  ``kinetics_400_{base,novel}_labels.csv``), ViT-B/16 from OpenAI; the rows of the fully supervised table, K400
  base-to-novel (vanilla zero-shot on base / novel, ViFi-CLIP fitted on each base split and validated on the novel
  classes) and bridge-and-prompt's base fit. HMDB-51 / UCF-101 / SSv2 base-to-novel and the cross-dataset zero-shot
  evaluations read other datasets' roots: their configs and commands are in vificlip/README.md.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import yaml

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

#: method -> (label, config file stem suffix, paper top-1 K400 fully supervised)
METHODS: dict[str, tuple[str, str, float | None]] = {
    "zero_shot": ("Vanilla zero-shot CLIP", "zero-shot", None),
    "image_ft": ("Image-FT (vision tower fine-tuned)", "image-ft", 82.8),
    "text_ft": ("Text-FT (text tower fine-tuned)", "text-ft", 73.1),
    "vificlip": ("ViFi-CLIP (both towers fine-tuned)", "vificlip", 83.9),
    "prompting": ("Bridge-and-prompt (deep V+L prompts)", "b2n-prompting", None),
}
#: the methods that train, in table order
TRAINED = ("image_ft", "text_ft", "vificlip")
#: the paper's base-to-novel K400 figures (vificlip/README.md, 'Paper figures'): base / novel / HM
PAPER_B2N = {"vificlip": (76.4, 61.1, 67.9)}
#: the paper's cross-dataset zero-shot after K400 training (HMDB-51, UCF-101), ViFi-CLIP
PAPER_XDATA = {"vificlip": "51.3 / 76.8"}
COST = {"validate": 0.2, "fit": 1.0}
#: training seeds of every trained row (``seed_everything``; the first is the config's)
SEEDS = {"smoke": (42,), "tiny": (42, 43, 44), "paper": (42,)}
DATA_HELP = ("give it as DATA=/path/to/kinetics400 (make reproduce-vificlip PRESET=paper DATA=...; python -m "
             "benchmarks.reproduce vificlip --data ...); layout: Kinetics-400 as `path label` lists (train.txt, "
             "val.txt) and an `id,name` class CSV at the root (vificlip/README.md, How to run)")
SMOKE_WRITER = {"num_per_class": 2, "val_per_class": 1, "frames": 8, "size": 32}
#: the held-out ShapesWorld class set (cross-dataset zero-shot): colours and shapes the K400 stand-in never shows
HELDOUT_WRITER = {"colours": ("yellow", "orange", "purple"), "shapes": ("hexagon", "diamond", "cross", "ring"),
                  "seed": 1}


#: the paper preset's base-to-novel "seeds": the published base splits ``fs_base_s<k>_train.txt`` (the table's seed
#: column shows k)
PAPER_B2N_SPLITS = (1, 2, 3)


def _paper_half(half: str) -> list[str]:
    """The overrides that validate on K400's published base or novel classes (split list + class CSV)."""
    from vificlip.configs.generate import B2N_LABELS

    return [f"--data.init_args.val_file={half}_val.txt",
            f"--data.init_args.class_file={B2N_LABELS['k400']}_{half}_labels.csv"]


def _config(preset: str, suffix: str) -> Path | None:
    found = sorted((project_root() / "vificlip" / "configs" / preset / "k400").glob(f"*_{suffix}.yaml"))
    return found[0] if found else None


def _root(preset: str, data: str | None) -> Path | None:
    if data:
        return Path(data).expanduser()
    return data_dir() / "kinetics400-smoke" if preset == "smoke" else None


def heldout_root(preset: str) -> Path:
    """The ShapesWorld held-out class set of a preset (K400 layout, classes disjoint from the K400 stand-in's)."""
    return data_dir() / ("kinetics400-heldout-smoke" if preset == "smoke" else "kinetics400-heldout")


def _key(base: str, seed: int, seeds: tuple[int, ...]) -> str:
    return base if seed == seeds[0] else f"{base}_s{seed}"


def row_meta(key: str) -> dict[str, Any]:
    """What a row key means: ``method``, ``setting`` (``full`` = trained on all K400 classes, ``b2n`` = trained on
    the base half), ``eval`` (``all`` / ``base`` / ``novel`` / ``heldout``) and ``seed`` (None: the first)."""
    parts = key.split("_")
    seed = None
    if parts[-1].startswith("s") and parts[-1][1:].isdigit():
        seed = int(parts.pop()[1:])
    if parts[0] in ("zero", "image", "text"):
        method, rest = "_".join(parts[:2]), parts[2:]
    else:
        method, rest = parts[0], parts[1:]
    if method == "zero_shot":
        ev = rest[0] if rest else "all"
        return {"method": method, "setting": "b2n" if ev in ("base", "novel") else "full", "eval": ev, "seed": seed}
    if rest[:1] == ["b2n"]:
        return {"method": method, "setting": "b2n", "eval": "novel" if rest[1:] == ["novel"] else "base",
                "seed": seed}
    return {"method": method, "setting": "full", "eval": "heldout" if rest == ["heldout"] else "all", "seed": seed}


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    """The rows of a preset (see the module docstring); ``only`` keeps those keys and the fit rows they evaluate."""
    check_data_arg("ViFi-CLIP", preset, data, "the real Kinetics-400", DATA_HELP, must_exist=data)
    root = _root(preset, data)
    common: list[str] = []
    if root is not None:
        common.append(f"--data.init_args.root={root}")
    if data:
        common.append("--data.init_args.synth_if_missing=false")
    if preset == "tiny":
        common.append("--trainer.enable_progress_bar=false")
    heldout = [f"--data.init_args.root={heldout_root(preset)}"]
    rows: list[Row] = []

    def add(key: str, method: str, command: str, label: str, extra: list[str], checkpoint_of: str | None = None,
            base_common: bool = True, b2n: bool = False) -> None:
        # base-to-novel rows read the preset's b2n config of the method where there is one (its own lr)
        suffix = METHODS[method][1]
        cfg = (b2n and _config(preset, f"b2n-{suffix}")) or _config(preset, suffix)
        if cfg is None:
            return
        ov = [*(common if base_common else [o for o in common if not o.startswith("--data.init_args.root")]),
              *extra]
        rows.append(Row(key, label, str(cfg.relative_to(project_root())), ov, COST[command], command=command,
                        checkpoint_of=checkpoint_of))

    split = "--data.init_args.class_split="
    # base / novel classes: the datamodule's seeded halves on ShapesWorld; at paper scale the published split lists
    # and class CSVs (base_val.txt + kinetics_400_base_labels.csv, novel_val.txt + kinetics_400_novel_labels.csv)
    halves = {h: (_paper_half(h) if preset == "paper" else [split + h]) for h in ("base", "novel")}
    add("zero_shot", "zero_shot", "validate", "Vanilla zero-shot CLIP (all classes)", [])
    add("zero_shot_base", "zero_shot", "validate", "Vanilla zero-shot CLIP (base classes)", halves["base"])
    add("zero_shot_novel", "zero_shot", "validate", "Vanilla zero-shot CLIP (novel classes)", halves["novel"])
    if preset != "paper":
        add("zero_shot_heldout", "zero_shot", "validate", "Vanilla zero-shot CLIP (held-out class set)", heldout,
            base_common=False)
    seeds = SEEDS[preset]
    for seed in seeds:
        sd = [] if seed == seeds[0] else [f"--seed_everything={seed}"]
        tag = "" if seed == seeds[0] else f", seed {seed}"
        for m in TRAINED:
            key = _key(m, seed, seeds)
            add(key, m, "fit", f"{METHODS[m][0]} (all classes{tag})", sd)
            if preset != "paper":
                add(_key(f"{m}_heldout", seed, seeds), m, "validate",
                    f"{METHODS[m][0]} trained on all classes, zero-shot on the held-out set{tag}", sd + heldout, key,
                    base_common=False)
        for m in (*TRAINED, "prompting"):
            if preset == "paper" and m != "prompting":
                continue  # the paper preset's base-to-novel rows: ViFi-CLIP's below, bridge-and-prompt's base fit
            key = _key(f"{m}_b2n", seed, seeds)
            add(key, m, "fit", f"{METHODS[m][0]} (trained on the base classes{tag})",
                sd + ([] if m == "prompting" else [split + "base"]), b2n=True)
            if preset != "paper":
                add(_key(f"{m}_b2n_novel", seed, seeds), m, "validate",
                    f"{METHODS[m][0]} trained on base, validated on the novel classes{tag}", sd + [split + "novel"],
                    key, b2n=True)
    if preset == "paper":  # ViFi-CLIP base-to-novel on K400: one fit per published base split, novel validated
        for k in PAPER_B2N_SPLITS:
            key = _key("vificlip_b2n", k, PAPER_B2N_SPLITS)
            add(key, "vificlip", "fit", f"{METHODS['vificlip'][0]} (trained on the base split s{k})",
                [f"--data.init_args.train_file=fs_base_s{k}_train.txt"], b2n=True)
            add(_key("vificlip_b2n_novel", k, PAPER_B2N_SPLITS), "vificlip", "validate",
                f"{METHODS['vificlip'][0]} trained on base split s{k}, validated on the novel classes",
                [f"--data.init_args.train_file=fs_base_s{k}_train.txt", *halves["novel"]], key, b2n=True)
    if only:
        unknown = set(only) - {r.key for r in rows}
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {[r.key for r in rows]}")
        keep = set(only) | {r.checkpoint_of for r in rows if r.key in only and r.checkpoint_of}
        rows = [r for r in rows if r.key in keep]
    plan = Plan("vificlip", preset, rows, cli_module="vificlip", experiment="vificlip", info={"data": data},
                jobs=2 if preset == "tiny" else 1)  # two 1-thread rows at once beat one 2-thread row on 2 cores
    plan.prepare = lambda: prepare(plan)
    if data:
        plan.check = lambda: check_datamodules(
            plan, f"ViFi-CLIP's {preset} preset reads DATA={data}", DATA_HELP[0].upper() + DATA_HELP[1:] + ".")
    return plan


def prepare(plan: Plan) -> None:
    """Write the ShapesWorld Kinetics-400 and the held-out class set the rows read (if missing) and build
    ``shapes-clip-tiny`` (if needed)."""
    need_pretrained = set()
    for row in plan.rows:
        pre = yaml.safe_load((project_root() / row.config).read_text())["model"]["init_args"].get("pretrained")
        if isinstance(pre, str) and pre.startswith("shapes-"):
            need_pretrained.add(pre)
    if not plan.info.get("data") and plan.rows:
        from common.data.synth.video_writers import write_kinetics400

        small = SMOKE_WRITER if plan.preset == "smoke" else {}
        root = data_dir() / ("kinetics400-smoke" if plan.preset == "smoke" else "kinetics400")
        if not root.exists():
            print(f"[reproduce] writing the ShapesWorld Kinetics-400 to {root}")
            write_kinetics400(root, progress=False, **small)
        held = heldout_root(plan.preset)
        if any(row_meta(r.key)["eval"] == "heldout" for r in plan.rows) and not held.exists():
            print(f"[reproduce] writing the ShapesWorld held-out class set to {held}")
            write_kinetics400(held, progress=False, **{**small, **HELDOUT_WRITER})
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


def _first_seed(preset: str, meta: dict[str, Any]) -> int:
    """The seed column of a row key without a seed suffix (paper ViFi-CLIP base-to-novel: the base split, 1)."""
    if preset == "paper" and meta["method"] == "vificlip" and meta["setting"] == "b2n":
        return PAPER_B2N_SPLITS[0]
    return SEEDS[preset][0]


def _hm(base: float | None, novel: float | None) -> float | None:
    if base is None or novel is None or base + novel <= 0:
        return None
    return 2 * base * novel / (base + novel)


def table_rows(plan: Plan, results: dict[str, RowResult]) -> list[dict[str, Any]]:
    """One dict per row (CSV lines), chance lines first (one per evaluated class set)."""
    out, chance = [], {}
    for row in plan.rows:
        res = results.get(row.key)
        if res is None:
            continue
        meta = row_meta(row.key)
        if meta["eval"] not in chance:
            chance[meta["eval"]] = _num_classes(plan, row)
        m = res.metrics if res.status == "finished" else {}
        paper = METHODS[meta["method"]][2] if meta["setting"] == "full" and meta["eval"] == "all" else None
        out.append({"key": row.key, "method": METHODS[meta["method"]][0], "setting": meta["setting"],
                    "classes": meta["eval"], "seed": meta["seed"] or _first_seed(plan.preset, meta),
                    "command": row.command, "model_of": row.checkpoint_of or "", "status": res.status,
                    "trainable": res.trainable_params, "top1": 100 * m["val/acc1"] if "val/acc1" in m else None,
                    "paper_top1": paper, "minutes": res.seconds / 60, "run_id": res.run_id})
    lines = [{"key": f"chance_{ev}", "method": "chance", "setting": "", "classes": ev, "seed": "", "command": "",
              "model_of": "", "status": "", "trainable": 0, "top1": 100 / n if n else None, "paper_top1": None,
              "minutes": 0.0, "run_id": ""} for ev, n in chance.items()]
    return lines + out


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _values(lines_: list[dict[str, Any]], label: str, setting: str, ev: str) -> dict[int, float]:
    """Top-1 by seed of the finished rows of one method / setting / class set."""
    return {r["seed"]: r["top1"] for r in lines_ if r["method"] == label and r["setting"] == setting
            and r["classes"] == ev and r["status"] == "finished" and r["top1"] is not None}


def _failed(lines_: list[dict[str, Any]], label: str, setting: str) -> str:
    n = sum(1 for r in lines_ if r["method"] == label and r["setting"] == setting and r["status"] == "failed")
    return f" ({n} row(s) failed)" if n else ""


def _cells(m: str, setting: str, lines_: list[dict[str, Any]]) -> list[str] | None:
    """The cells after the method's name in one table (None: the method has no row there)."""
    label = METHODS[m][0]
    if setting == "b2n":
        base, novel = _values(lines_, label, "b2n", "base"), _values(lines_, label, "b2n", "novel")
        if not base and not novel and not _failed(lines_, label, "b2n"):
            return None
        hm = [h for s in base if s in novel and (h := _hm(base[s], novel[s])) is not None]
        paper = " / ".join(f"{v:.1f}" for v in PAPER_B2N[m]) if m in PAPER_B2N else (
            "- (K400 not reported; HMDB-51 77.1 / 54.9 / 64.1)" if m == "prompting" else "-")
        return [mean_std(list(base.values()), True), mean_std(list(novel.values()), True), mean_std(hm, True), paper]
    ev = "heldout" if setting == "heldout" else "all"
    vals = _values(lines_, label, "full", ev)
    if not vals and (ev == "heldout" or not _failed(lines_, label, "full")):
        return None
    if ev == "heldout":
        return [mean_std(list(vals.values()), True), PAPER_XDATA.get(m, "-")]
    tr = next((r["trainable"] for r in lines_ if r["method"] == label and r["trainable"] is not None), None)
    return ["-" if tr is None else str(tr), mean_std(list(vals.values()), True), _f(METHODS[m][2])]


#: per table: its intro and header lines
SECTIONS: dict[str, tuple[str, list[str]]] = {
    "full": ("Fully supervised setting (train and validate on all classes of the Kinetics-400 stand-in; K400 in the "
             "paper):", ["| Method | Trainable | Top-1 (all classes) | Paper (ViT-B/16, K400, 16 frames) |",
                         "|---|---:|---:|---:|"]),
    "b2n": ("Base-to-novel setting (ShapesWorld: the datamodule's seeded base / novel halves of the classes; paper: "
            "K400's published base splits s1-s3 (the seed column) and base / novel class lists): each trained model "
            "is fitted on the base classes and its last checkpoint validated on the base classes and, with the novel "
            "class names, on the novel ones; HM is the harmonic mean per seed:",
            ["| Method | Base | Novel | HM | Paper K400 base / novel / HM |", "|---|---:|---:|---:|---|"]),
    "heldout": ("Cross-dataset zero-shot (trained on all classes of the Kinetics-400 stand-in, validated without "
                "training on the held-out ShapesWorld class set: colours and shapes the training set never shows; "
                "HMDB-51 / UCF-101 in the paper, after K400 training with 32 frames):",
                ["| Method | Top-1 (held-out classes) | Paper HMDB-51 / UCF-101 |", "|---|---:|---|"]),
}


def _chance_cells(setting: str, chance: dict[str, float | None]) -> list[str] | None:
    if setting == "b2n":
        b, n = chance.get("base"), chance.get("novel")
        return None if b is None and n is None else [_f(b), _f(n), _f(_hm(b, n)), "-"]
    ev = "heldout" if setting == "heldout" else "all"
    if ev not in chance:
        return None
    return [_f(chance[ev]), "-"] if ev == "heldout" else ["-", _f(chance[ev]), "-"]


def markdown(lines_: list[dict[str, Any]], header: str) -> str:
    chance = {r["classes"]: r["top1"] for r in lines_ if r["method"] == "chance"}
    methods = [m for m in METHODS if any(r["method"] == METHODS[m][0] for r in lines_)]
    out = [header]
    for setting, (intro, head) in SECTIONS.items():
        body = []
        chance_cells = _chance_cells(setting, chance)
        if chance_cells is not None:
            body.append("| Chance (1 / classes) | " + " | ".join(chance_cells) + " |")
        for m in methods:
            cells = _cells(m, setting, lines_)
            if cells is not None:
                body.append(f"| {METHODS[m][0]}{_failed(lines_, METHODS[m][0], 'b2n' if setting == 'b2n' else 'full')}"
                            " | " + " | ".join(cells) + " |")
        if len(body) > (chance_cells is not None):  # a table with a method in it
            out += ["", intro, "", *head, *body]
    out += ["", "Cells with several seeds: mean ± sample std (seeds). Paper figures: vificlip/README.md ('Paper "
            "figures', from the official repository's tables)."]
    return "\n".join(out)


CSV_FIELDS = ["key", "method", "setting", "classes", "seed", "command", "model_of", "status", "trainable", "top1",
              "paper_top1", "minutes", "run_id"]


def write_results(plan: Plan, results: dict[str, RowResult], parent: str,
                  results_dir: Path | None = None) -> tuple[str, list[Path]]:
    """Write ``vificlip_<preset>.md/.csv`` and log every row's top-1 to the parent run."""
    from common import tracking

    lines_ = table_rows(plan, results)
    client = tracking.client()
    for r in lines_:
        if r["top1"] is not None and r["method"] != "chance":
            client.log_metric(parent, f"table/{r['key']}/top1", float(r["top1"]))
    data = plan.info.get("data") or {
        "smoke": "a small ShapesWorld Kinetics-400 stand-in (2 videos a class) and held-out class set, generated",
        "tiny": "the ShapesWorld Kinetics-400 stand-in and its held-out class set, generated"}[plan.preset]
    model = {"smoke": "random-init tiny CLIP, 2 training batches a row: a pipeline check, not a result",
             "tiny": "the ShapesWorld-pretrained shapes-clip-tiny",
             "paper": "ViT-B/16 (OpenAI CLIP)"}[plan.preset]
    trained = statistics.fsum(res.seconds for res in results.values())
    header = (f"# ViFi-CLIP table, `{plan.preset}` preset\n\n"
              f"Data: {data}; model: {model}. Generated {time.strftime('%Y-%m-%d %H:%M')}, git "
              f"{tracking.git_sha(short=True)}, MLflow parent run `{parent}`; time of the rows {trained / 60:.1f} min. "
              "Top-1 (%) on the validation split after the last epoch (vanilla zero-shot: `validate`, nothing "
              "trained; a base-to-novel or cross-dataset row: `validate` of the trained row's last checkpoint).")
    md = markdown(lines_, header)
    return md, save_table(plan, md, rows_to_csv(lines_, CSV_FIELDS), results_dir)
