"""ViFi-CLIP's tables: fully supervised, base-to-novel (base / novel / HM) and cross-dataset zero-shot, with the
paper's figures beside ours and a chance row in each.

Rows are CLI runs of the configs ``vificlip/configs/<preset>/k400/`` (:mod:`vificlip.configs.generate`); one row = one
MLflow child run. Every trained method (image-FT, text-FT, ViFi-CLIP) is

* fitted on all classes of the Kinetics-400 stand-in (the fully supervised top-1, validated after the last epoch),
  and that last checkpoint validated on the **held-out class set** (``<method>_heldout``: cross-dataset zero-shot,
  the paper's K400 -> HMDB-51 / UCF-101);
* fitted on the **base** half of the classes (``<method>_b2n``, ``--data.init_args.class_split=base``: its base
  top-1) and that last checkpoint validated with the **novel** class names on the novel half
  (``<method>_b2n_novel``): base / novel / harmonic mean. Bridge-and-prompt (``prompting_b2n``) the same way, its
  prompts trained on the frozen base-trained ViFi-CLIP of the same seed (``init_from`` of ``vificlip_b2n``).

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
* ``paper`` (``DATA=`` required): a folder with one root per dataset, ``kinetics400/`` and any of ``hmdb51/``,
  ``ucf101/``, ``ssv2/``, ``kinetics600/`` (or the Kinetics-400 root itself: its rows only), each holding its videos
  and the official split lists and label CSVs under their official names (:mod:`vificlip.configs.generate`);
  ViT-B/16 from OpenAI; one seed. Rows (:func:`_paper_rows`): the fully supervised K400 table; the zero-shot training
  fit on K400 (``vificlip_zs``, 32 frames); base-to-novel on every dataset present (vanilla zero-shot on the
  published base / novel lists, ViFi-CLIP fitted on each published base split s1-s3 and validated on the novel
  list; on HMDB-51 / UCF-101 / SSv2 bridge-and-prompt the same way, started from ``vificlip_zs``); cross-dataset
  zero-shot on HMDB-51 / UCF-101 / K600 (vanilla CLIP and ``vificlip_zs``, 3 splits each). A row that starts from
  another's checkpoint (``Row.checkpoint_flag``: ``--model.init_args.init_from``) runs after it.
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
#: the paper's base-to-novel figures by (dataset, method) (the official repository's tables; vificlip/README.md,
#: 'Paper figures'): base / novel / HM, mean of 3 seeds
PAPER_B2N = {("k400", "image_ft"): (72.9, 58.0, 64.6), ("k400", "text_ft"): (73.4, 59.7, 65.8),
             ("k400", "vificlip"): (76.4, 61.1, 67.9),
             ("hmdb51", "image_ft"): (62.6, 47.5, 54.0), ("hmdb51", "text_ft"): (70.0, 51.2, 59.1),
             ("hmdb51", "vificlip"): (73.8, 53.3, 61.9), ("hmdb51", "prompting"): (77.1, 54.9, 64.1),
             ("ucf101", "image_ft"): (86.4, 65.3, 74.4), ("ucf101", "text_ft"): (90.9, 67.4, 77.4),
             ("ucf101", "vificlip"): (92.9, 67.7, 78.3), ("ucf101", "prompting"): (95.9, 74.1, 83.6),
             ("ssv2", "image_ft"): (9.2, 8.5, 8.8), ("ssv2", "text_ft"): (12.4, 9.5, 10.8),
             ("ssv2", "vificlip"): (16.2, 12.1, 13.9), ("ssv2", "prompting"): (15.8, 11.5, 13.3)}
#: the paper's cross-dataset zero-shot after K400 training (32 frames), by evaluated dataset (ViFi-CLIP: mean ± std
#: over 3 splits); "k400" is the tiny table's held-out ShapesWorld set, beside which ViFi-CLIP's figures stand
PAPER_XDATA = {("k400", "vificlip"): "HMDB-51 51.3 / UCF-101 76.8", ("hmdb51", "vificlip"): "51.3 ± 0.6",
               ("ucf101", "vificlip"): "76.8 ± 0.7", ("k600", "vificlip"): "71.2 ± 1.0",
               ("hmdb51", "image_ft"): "49.0", ("ucf101", "image_ft"): "72.9", ("k600", "image_ft"): "62.2",
               ("hmdb51", "text_ft"): "48.5", ("ucf101", "text_ft"): "69.8", ("k600", "text_ft"): "68.5"}
#: the paper's few-shot top-1 at K = 2 / 4 / 8 / 16 (ViFi-CLIP fine-tuned from CLIP; bridge-and-prompt from K400)
FEW_SHOTS = (2, 4, 8, 16)
PAPER_FEW = {("hmdb51", "vificlip"): (57.2, 62.7, 64.5, 66.8), ("ucf101", "vificlip"): (80.7, 85.1, 90.0, 92.7),
             ("ssv2", "vificlip"): (6.2, 7.4, 8.5, 12.4), ("hmdb51", "prompting"): (63.0, 65.1, 69.6, 72.0),
             ("ucf101", "prompting"): (91.0, 93.7, 95.0, 96.4), ("ssv2", "prompting"): (6.7, 7.9, 10.2, 13.5)}
#: the paper preset's ``DATA=`` folder: one sub-folder per dataset (any subset; ``DATA=`` may also be the K400 root
#: itself, which runs the K400 rows only)
DATASET_DIRS = {"k400": "kinetics400", "hmdb51": "hmdb51", "ucf101": "ucf101", "ssv2": "ssv2", "k600": "kinetics600"}
DATASET_NAMES = {"k400": "Kinetics-400", "hmdb51": "HMDB-51", "ucf101": "UCF-101", "ssv2": "SSv2",
                 "k600": "Kinetics-600"}
#: the cross-dataset zero-shot splits (HMDB-51 / UCF-101: three test lists; K600: three sets of 160 classes)
ZS_SPLITS = (1, 2, 3)
COST = {"validate": 0.2, "fit": 1.0}
#: training seeds of every trained row (``seed_everything``; the first is the config's)
SEEDS = {"smoke": (42,), "tiny": (42, 43, 44), "paper": (42,)}
DATA_HELP = ("give it as DATA=/path/to/datasets (make reproduce-vificlip PRESET=paper DATA=...; python -m "
             "benchmarks.reproduce vificlip --data ...) holding kinetics400/ and any of hmdb51/, ucf101/, ssv2/, "
             "kinetics600/ (or DATA=/path/to/kinetics400 for the K400 rows only); each root holds its videos, the "
             "official `path label` split lists and `id,name` label CSVs under their official names (train.txt, "
             "val.txt, kinetics_400_labels.csv, fs_base_s1_train.txt, base_val.txt, novel_val.txt, "
             "<prefix>_{base,novel}_labels.csv, val1.txt, hmdb_51_labels.csv, ZS_split1_K600_eval.txt, "
             "ZS_split1_K600.csv, ...; vificlip/README.md, Reproduce)")
SMOKE_WRITER = {"num_per_class": 2, "val_per_class": 1, "frames": 8, "size": 32}
#: the held-out ShapesWorld class set (cross-dataset zero-shot): colours and shapes the K400 stand-in never shows
HELDOUT_WRITER = {"colours": ("yellow", "orange", "purple"), "shapes": ("hexagon", "diamond", "cross", "ring"),
                  "seed": 1}


#: the paper preset's base-to-novel "seeds": the published base splits ``fs_base_s<k>_train.txt`` (the table's seed
#: column shows k)
PAPER_B2N_SPLITS = (1, 2, 3)


def _overrides(files: dict[str, str]) -> list[str]:
    return [f"--data.init_args.{k}={v}" for k, v in files.items()]


def _paper_half(half: str, dataset: str = "k400", split: int = 1) -> list[str]:
    """The overrides that read ``dataset``'s published base (training split ``split``) or novel classes (list +
    class CSV)."""
    from vificlip.configs.generate import b2n_files

    return _overrides(b2n_files(dataset, half, split))


def _config(preset: str, suffix: str, dataset: str = "k400") -> Path | None:
    found = sorted((project_root() / "vificlip" / "configs" / preset / dataset).glob(f"*_{suffix}.yaml"))
    return found[0] if found else None


def paper_roots(data: str) -> dict[str, Path]:
    """The dataset roots of the paper preset's ``DATA=``: its sub-folders named in :data:`DATASET_DIRS` (those that
    exist), or ``DATA`` itself as the Kinetics-400 root when it has none of them."""
    base = Path(data).expanduser()
    found = {ds: base / d for ds, d in DATASET_DIRS.items() if (base / d).is_dir()}
    return found or {"k400": base}


def _root(preset: str) -> Path | None:
    """The ShapesWorld Kinetics-400 stand-in of a preset (tiny: the datamodule's default root)."""
    return data_dir() / "kinetics400-smoke" if preset == "smoke" else None


def heldout_root(preset: str) -> Path:
    """The ShapesWorld held-out class set of a preset (K400 layout, classes disjoint from the K400 stand-in's)."""
    return data_dir() / ("kinetics400-heldout-smoke" if preset == "smoke" else "kinetics400-heldout")


def _key(base: str, seed: int, seeds: tuple[int, ...]) -> str:
    return base if seed == seeds[0] else f"{base}_s{seed}"


def row_meta(key: str) -> dict[str, Any]:
    """What a row key means: ``dataset`` (a key prefix ``hmdb51_`` / ``ucf101_`` / ``ssv2_`` / ``k600_``; none:
    ``k400``, whose tiny stand-in is ShapesWorld), ``method``, ``setting`` (``full`` = trained on all K400 classes,
    ``b2n`` = trained on the base classes, ``zs_train`` = the paper's 32-frame K400 fit that the cross-dataset rows
    evaluate), ``eval`` (``all`` / ``base`` / ``novel`` / ``heldout`` = another dataset's classes) and ``seed``
    (None: the first; the paper's base-to-novel and cross-dataset rows: the split)."""
    parts = key.split("_")
    dataset = "k400"
    if parts[0] in DATASET_DIRS and parts[0] != "k400" and len(parts) > 1:
        dataset = parts.pop(0)
    seed = None
    if parts[-1].startswith("s") and parts[-1][1:].isdigit():
        seed = int(parts.pop()[1:])
    if parts[0] in ("zero", "image", "text"):
        method, rest = "_".join(parts[:2]), parts[2:]
    else:
        method, rest = parts[0], parts[1:]
    meta: dict[str, Any] = {"dataset": dataset, "method": method, "seed": seed}
    if method == "zero_shot":
        ev = rest[0] if rest else "all"
        return {**meta, "setting": "b2n" if ev in ("base", "novel") else "full", "eval": ev}
    if rest[:1] == ["b2n"]:
        return {**meta, "setting": "b2n", "eval": "novel" if rest[1:] == ["novel"] else "base"}
    if rest == ["zs"]:
        return {**meta, "setting": "zs_train", "eval": "all"}
    if len(rest) == 1 and rest[0][:1] == "k" and rest[0][1:].isdigit():
        return {**meta, "setting": "few", "eval": "all", "shots": int(rest[0][1:])}
    return {**meta, "setting": "full", "eval": "heldout" if rest == ["heldout"] else "all"}


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    """The rows of a preset (see the module docstring); ``only`` keeps those keys and the fit rows they evaluate."""
    check_data_arg("ViFi-CLIP", preset, data, "the real Kinetics-400", DATA_HELP, must_exist=data)
    rows = _paper_rows(paper_roots(data)) if data else _small_rows(preset)
    if only:
        unknown = set(only) - {r.key for r in rows}
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {[r.key for r in rows]}")
        keep = set(only)
        while True:  # the fit rows they evaluate or start from, and those rows' own
            more = keep | {r.checkpoint_of for r in rows if r.key in keep and r.checkpoint_of}
            if more == keep:
                break
            keep = more
        rows = [r for r in rows if r.key in keep]
    plan = Plan("vificlip", preset, rows, cli_module="vificlip", experiment="vificlip", info={"data": data},
                jobs=2 if preset == "tiny" else 1)  # two 1-thread rows at once beat one 2-thread row on 2 cores
    plan.prepare = lambda: prepare(plan)
    if data:
        plan.check = lambda: check_datamodules(
            plan, f"ViFi-CLIP's {preset} preset reads DATA={data}", DATA_HELP[0].upper() + DATA_HELP[1:] + ".")
    return plan


def _row(rows: list[Row], key: str, label: str, cfg: Path | None, command: str, overrides: list[str],
         checkpoint_of: str | None = None, checkpoint_flag: str = "--ckpt_path") -> None:
    if cfg is not None:
        rows.append(Row(key, label, str(cfg.relative_to(project_root())), overrides, COST[command], command=command,
                        checkpoint_of=checkpoint_of, checkpoint_flag=checkpoint_flag))


def _small_rows(preset: str) -> list[Row]:
    """ShapesWorld (tiny / smoke): every method on all classes, on the base half and across to the held-out set."""
    root = _root(preset)
    common: list[str] = [f"--data.init_args.root={root}"] if root is not None else []
    if preset == "tiny":
        common.append("--trainer.enable_progress_bar=false")
    heldout = [f"--data.init_args.root={heldout_root(preset)}"]
    rows: list[Row] = []

    def add(key: str, method: str, command: str, label: str, extra: list[str], checkpoint_of: str | None = None,
            base_common: bool = True, b2n: bool = False, flag: str = "--ckpt_path") -> None:
        # base-to-novel rows read the preset's b2n config of the method where there is one (its own lr)
        suffix = METHODS[method][1]
        cfg = (b2n and _config(preset, f"b2n-{suffix}")) or _config(preset, suffix)
        ov = [*(common if base_common else [o for o in common if not o.startswith("--data.init_args.root")]),
              *extra]
        _row(rows, key, label, cfg, command, ov, checkpoint_of, flag)

    split = "--data.init_args.class_split="
    add("zero_shot", "zero_shot", "validate", "Vanilla zero-shot CLIP (all classes)", [])
    add("zero_shot_base", "zero_shot", "validate", "Vanilla zero-shot CLIP (base classes)", [split + "base"])
    add("zero_shot_novel", "zero_shot", "validate", "Vanilla zero-shot CLIP (novel classes)", [split + "novel"])
    add("zero_shot_heldout", "zero_shot", "validate", "Vanilla zero-shot CLIP (held-out class set)", heldout,
        base_common=False)
    seeds = SEEDS[preset]
    for seed in seeds:
        sd = [] if seed == seeds[0] else [f"--seed_everything={seed}"]
        tag = "" if seed == seeds[0] else f", seed {seed}"
        for m in TRAINED:
            key = _key(m, seed, seeds)
            add(key, m, "fit", f"{METHODS[m][0]} (all classes{tag})", sd)
            add(_key(f"{m}_heldout", seed, seeds), m, "validate",
                f"{METHODS[m][0]} trained on all classes, zero-shot on the held-out set{tag}", sd + heldout, key,
                base_common=False)
        for m in (*TRAINED, "prompting"):
            key = _key(f"{m}_b2n", seed, seeds)
            # bridge-and-prompt: prompts on a frozen ViFi-CLIP, here the seed's base-trained one (init_from; the
            # paper's comes from K400, another dataset: one that never saw the novel classes either)
            bridge = ({"checkpoint_of": _key("vificlip_b2n", seed, seeds), "flag": "--model.init_args.init_from"}
                      if m == "prompting" else {})
            add(key, m, "fit", f"{METHODS[m][0]} (trained on the base classes{tag})",
                sd + ([] if m == "prompting" else [split + "base"]), b2n=True, **bridge)
            add(_key(f"{m}_b2n_novel", seed, seeds), m, "validate",
                f"{METHODS[m][0]} trained on base, validated on the novel classes{tag}", sd + [split + "novel"],
                key, b2n=True)
    return rows


def _slug(method: str) -> str:
    """The method's part of a config name (``image-ft``, ``prompting``, ...)."""
    return METHODS[method][1].removeprefix("b2n-")


def _paper_rows(roots: dict[str, Path]) -> list[Row]:
    """The paper's tables on the datasets present (:func:`paper_roots`), one seed; rows of a dataset read its root:

    * Kinetics-400: vanilla zero-shot (16 frames, 1 view), image-FT / text-FT / ViFi-CLIP fully supervised, and each
      method's zero-shot training fit (``<method>_zs``: 32 frames, all classes) that the cross-dataset rows evaluate
      (``vificlip_zs`` is also where bridge-and-prompt starts);
    * base-to-novel on each of K400 / HMDB-51 / UCF-101 / SSv2: vanilla zero-shot on the published base and novel
      lists; image-FT / text-FT / ViFi-CLIP fitted on each base split s1-s3, each checkpoint validated on the novel
      list with the novel CSV; on HMDB-51 / UCF-101 / SSv2 also bridge-and-prompt the same way, from ``vificlip_zs``
      (``--model.init_args.init_from``; the paper reports no K400 prompting row);
    * cross-dataset zero-shot on HMDB-51 / UCF-101 / K600, 3 splits each: vanilla CLIP and each ``<method>_zs``;
    * few-shot on HMDB-51 / UCF-101 / SSv2, K = 2 / 4 / 8 / 16: ViFi-CLIP fine-tuned from CLIP, bridge-and-prompt
      from ``vificlip_zs``; validated on the full test list.
    """
    from vificlip.configs.generate import zs_split_files

    rows: list[Row] = []

    def root(ds: str) -> list[str]:
        return [f"--data.init_args.root={roots[ds]}", "--data.init_args.synth_if_missing=false"]

    k400 = "k400" in roots
    from_k400 = {"checkpoint_of": "vificlip_zs", "checkpoint_flag": "--model.init_args.init_from"}
    if k400:
        _row(rows, "zero_shot", "Vanilla zero-shot CLIP (all classes)", _config("paper", "zero-shot"), "validate",
             root("k400"))
        for m in TRAINED:
            _row(rows, m, f"{METHODS[m][0]} (all classes)", _config("paper", f"16f_{METHODS[m][1]}"), "fit",
                 root("k400"))
        for m in TRAINED:
            _row(rows, f"{m}_zs", f"{METHODS[m][0]} (all classes, 32 frames: the zero-shot training)",
                 _config("paper", f"zs-train-{METHODS[m][1]}"), "fit", root("k400"))
    for ds in ("k400", "hmdb51", "ucf101", "ssv2"):
        if ds not in roots:
            continue
        pre, name = ("" if ds == "k400" else f"{ds}_"), DATASET_NAMES[ds]
        for half in ("base", "novel"):
            _row(rows, f"{pre}zero_shot_{half}", f"Vanilla zero-shot CLIP ({name} {half} classes)",
                 _config("paper", "b2n-zero-shot", ds), "validate", root(ds) + _paper_half(half, ds))
        for m in (*TRAINED, "prompting"):
            if m == "prompting" and (ds == "k400" or not k400):
                continue
            start = from_k400 if m == "prompting" else {}
            for k in PAPER_B2N_SPLITS:
                key, cfg = _key(f"{pre}{m}_b2n", k, PAPER_B2N_SPLITS), _config("paper", f"b2n-{_slug(m)}", ds)
                base = root(ds) + _paper_half("base", ds, k)
                _row(rows, key, f"{METHODS[m][0]} ({name} base split s{k})", cfg, "fit", base, **start)
                _row(rows, _key(f"{pre}{m}_b2n_novel", k, PAPER_B2N_SPLITS),
                     f"{METHODS[m][0]} trained on {name} base split s{k}, validated on the novel classes", cfg,
                     "validate", base + _paper_half("novel", ds), key)
    for ds in ("hmdb51", "ucf101", "k600"):
        if ds not in roots:
            continue
        for m in ("zero_shot", *TRAINED):
            if m != "zero_shot" and not k400:
                continue
            for k in ZS_SPLITS:
                _row(rows, _key(f"{ds}_{m}_heldout", k, ZS_SPLITS),
                     f"{METHODS[m][0]}{'' if m == 'zero_shot' else ' (K400, 32 frames)'}, zero-shot on "
                     f"{DATASET_NAMES[ds]} split {k}", _config("paper", f"zs-eval-{METHODS[m][1]}", ds), "validate",
                     root(ds) + _overrides(zs_split_files(ds, k)), None if m == "zero_shot" else f"{m}_zs")
    for ds in ("hmdb51", "ucf101", "ssv2"):
        if ds not in roots:
            continue
        for m in ("vificlip", "prompting"):
            if m == "prompting" and not k400:
                continue
            for shots in FEW_SHOTS:
                _row(rows, f"{ds}_{m}_k{shots}", f"{METHODS[m][0]} ({DATASET_NAMES[ds]}, {shots} shots per class)",
                     _config("paper", f"k{shots}-{_slug(m)}", ds), "fit", root(ds),
                     **(from_k400 if m == "prompting" else {}))
    return rows


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
    """The seed column of a row key without a seed suffix (paper: a trained base-to-novel row's base split, a
    cross-dataset row's split: 1)."""
    if preset == "paper" and meta["eval"] == "heldout":
        return ZS_SPLITS[0]
    if preset == "paper" and meta["setting"] == "b2n" and meta["method"] != "zero_shot":
        return PAPER_B2N_SPLITS[0]
    return SEEDS[preset][0]


def _hm(base: float | None, novel: float | None) -> float | None:
    if base is None or novel is None or base + novel <= 0:
        return None
    return 2 * base * novel / (base + novel)


def table_rows(plan: Plan, results: dict[str, RowResult]) -> list[dict[str, Any]]:
    """One dict per row (CSV lines), chance lines first (one per evaluated dataset and class set)."""
    out, chance = [], {}
    for row in plan.rows:
        res = results.get(row.key)
        if res is None:
            continue
        meta = row_meta(row.key)
        if (meta["dataset"], meta["eval"]) not in chance and meta["setting"] != "zs_train":
            chance[meta["dataset"], meta["eval"]] = _num_classes(plan, row)
        m = res.metrics if res.status == "finished" else {}
        paper = METHODS[meta["method"]][2] if meta["setting"] == "full" and meta["eval"] == "all" else None
        out.append({"key": row.key, "dataset": meta["dataset"], "method": METHODS[meta["method"]][0],
                    "setting": meta["setting"], "classes": meta["eval"], "shots": meta.get("shots"),
                    "seed": meta["seed"] or _first_seed(plan.preset, meta),
                    "command": row.command, "model_of": row.checkpoint_of or "", "status": res.status,
                    "trainable": res.trainable_params, "top1": 100 * m["val/acc1"] if "val/acc1" in m else None,
                    "paper_top1": paper, "minutes": res.seconds / 60, "run_id": res.run_id})
    lines = [{"key": f"chance_{ev}" if ds == "k400" else f"chance_{ds}_{ev}", "dataset": ds, "method": "chance",
              "setting": "", "classes": ev, "shots": None, "seed": "", "command": "", "model_of": "", "status": "",
              "trainable": 0, "top1": 100 / n if n else None, "paper_top1": None, "minutes": 0.0, "run_id": ""}
             for (ds, ev), n in chance.items()]
    return lines + out


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _values(lines_: list[dict[str, Any]], label: str, setting: str, ev: str, ds: str = "k400",
            by: str = "seed") -> dict[int, float]:
    """Top-1 by seed (or by ``by``: ``shots``) of the finished rows of one dataset / method / setting / class set."""
    return {r[by]: r["top1"] for r in lines_ if r["method"] == label and r["setting"] == setting
            and r["classes"] == ev and r["dataset"] == ds and r["status"] == "finished" and r["top1"] is not None}


def _failed(lines_: list[dict[str, Any]], label: str, setting: str, ds: str = "k400") -> str:
    n = sum(1 for r in lines_ if r["method"] == label and r["setting"] == setting and r["status"] == "failed"
            and r["dataset"] == ds)
    return f" ({n} row(s) failed)" if n else ""


def _cells(m: str, setting: str, lines_: list[dict[str, Any]], ds: str = "k400") -> list[str] | None:
    """The cells after the method's name in one table (None: the method has no row there)."""
    label = METHODS[m][0]
    if setting == "b2n":
        base, novel = _values(lines_, label, "b2n", "base", ds), _values(lines_, label, "b2n", "novel", ds)
        if not base and not novel and not _failed(lines_, label, "b2n", ds):
            return None
        hm = [h for s in base if s in novel and (h := _hm(base[s], novel[s])) is not None]
        paper = " / ".join(f"{v:.1f}" for v in PAPER_B2N[ds, m]) if (ds, m) in PAPER_B2N else (
            "- (K400 not reported; HMDB-51 77.1 / 54.9 / 64.1)" if (ds, m) == ("k400", "prompting") else "-")
        return [mean_std(list(base.values()), True), mean_std(list(novel.values()), True), mean_std(hm, True), paper]
    if setting == "few":
        by_k = _values(lines_, label, "few", "all", ds, by="shots")
        if not by_k and not _failed(lines_, label, "few", ds):
            return None
        paper = " / ".join(f"{v:.1f}" for v in PAPER_FEW[ds, m]) if (ds, m) in PAPER_FEW else "-"
        return [_f(by_k.get(k)) for k in FEW_SHOTS] + [paper]
    ev = "heldout" if setting == "heldout" else "all"
    vals = _values(lines_, label, "full", ev, ds)
    if not vals and (ev == "heldout" or not _failed(lines_, label, "full", ds)):
        return None
    if ev == "heldout":
        return [mean_std(list(vals.values()), True), PAPER_XDATA.get((ds, m), "-")]
    tr = next((r["trainable"] for r in lines_ if r["method"] == label and r["trainable"] is not None
               and r["setting"] == "full"), None)
    return ["-" if tr is None else str(tr), mean_std(list(vals.values()), True), _f(METHODS[m][2])]


#: per table: its intro and header lines
SECTIONS: dict[str, tuple[str, list[str]]] = {
    "full": ("Fully supervised setting (train and validate on all classes of the Kinetics-400 stand-in; K400 in the "
             "paper):", ["| Method | Trainable | Top-1 (all classes) | Paper (ViT-B/16, K400, 16 frames) |",
                         "|---|---:|---:|---:|"]),
    "b2n": ("Base-to-novel setting (ShapesWorld: the datamodule's seeded base / novel halves of the classes; paper: "
            "each dataset's published base splits s1-s3 (the seed column) and base / novel class lists): each "
            "trained model is fitted on the base classes and its last checkpoint validated on the base classes and, "
            "with the novel class names, on the novel ones; HM is the harmonic mean per seed:",
            ["| Method | Base | Novel | HM | Paper base / novel / HM |", "|---|---:|---:|---:|---|"]),
    "heldout": ("Cross-dataset zero-shot (ShapesWorld: trained on all classes of the Kinetics-400 stand-in, validated "
                "without training on the held-out class set, colours and shapes the training set never shows; "
                "paper: ViFi-CLIP trained on K400 with 32 frames, validated on HMDB-51 / UCF-101 / K600, 3 splits "
                "each, the seed column):",
                ["| Method | Top-1 (held-out classes) | Paper (ViT-B/16) |", "|---|---:|---|"]),
    "few": ("Few-shot (paper preset: K training videos per class, `train1_few_shot_<K>.txt`, validated on the full "
            "test list; ViFi-CLIP fine-tuned from CLIP, bridge-and-prompt from the K400 ViFi-CLIP):",
            ["| Method | K=2 | K=4 | K=8 | K=16 | Paper K=2 / 4 / 8 / 16 |", "|---|---:|---:|---:|---:|---|"]),
}


def _chance_cells(setting: str, chance: dict[tuple[str, str], float | None], ds: str) -> list[str] | None:
    if setting == "b2n":
        b, n = chance.get((ds, "base")), chance.get((ds, "novel"))
        return None if b is None and n is None else [_f(b), _f(n), _f(_hm(b, n)), "-"]
    ev = "heldout" if setting == "heldout" else "all"
    if (ds, ev) not in chance:
        return None
    if setting == "few":
        return [_f(chance[ds, ev])] * len(FEW_SHOTS) + ["-"]
    return [_f(chance[ds, ev]), "-"] if ev == "heldout" else ["-", _f(chance[ds, ev]), "-"]


def markdown(lines_: list[dict[str, Any]], header: str) -> str:
    chance = {(r["dataset"], r["classes"]): r["top1"] for r in lines_ if r["method"] == "chance"}
    methods = [m for m in METHODS if any(r["method"] == METHODS[m][0] for r in lines_)]
    datasets = [d for d in DATASET_DIRS if any(r["dataset"] == d for r in lines_)]
    out = [header]
    for setting, (intro, head) in SECTIONS.items():
        body = []
        for ds in datasets:
            # the K400 rows (and every ShapesWorld row) unprefixed; another dataset's rows name it
            name = "" if ds == "k400" else f"{DATASET_NAMES[ds]}: "
            chance_cells = _chance_cells(setting, chance, ds)
            part = []
            for m in methods:
                cells = _cells(m, setting, lines_, ds)
                if cells is not None:
                    failed = _failed(lines_, METHODS[m][0], setting if setting in ("b2n", "few") else "full", ds)
                    part.append(f"| {name}{METHODS[m][0]}{failed} | " + " | ".join(cells) + " |")
            if part:  # a dataset with a method in this table
                if chance_cells is not None:
                    body.append(f"| {name}Chance (1 / classes) | " + " | ".join(chance_cells) + " |")
                body += part
        if body:
            out += ["", intro, "", *head, *body]
    zs = [r for r in lines_ if r["setting"] == "zs_train"]
    if zs:
        fits = "; ".join(f"{r['method']} `{r['key']}` {_f(r['top1'])}" + (
            f" ({r['status']})" if r["status"] != "finished" else "") for r in zs)
        out += ["", "The models of the paper's cross-dataset rows, fitted on all Kinetics-400 classes with 32 frames "
                f"(Kinetics-400 top-1): {fits}."]
    out += ["", "Cells with several seeds: mean ± sample std (seeds). Paper figures: vificlip/README.md ('Paper "
            "figures', from the official repository's tables)."]
    return "\n".join(out)


CSV_FIELDS = ["key", "dataset", "method", "setting", "classes", "shots", "seed", "command", "model_of", "status",
              "trainable", "top1", "paper_top1", "minutes", "run_id"]


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
