"""Conv-Adapter's transfer tables: linear probe, full fine-tuning, BitFit and the four Conv-Adapter variants on a
ResNet and a ConvNeXt, over VTAB-1k-style tasks and few-shot (K = 1, 2, 4, 8, 16).

Rows are the configs ``conv_adapter/configs/<preset>/<backbone>/<method>.yaml`` (:mod:`conv_adapter.configs.generate`)
with the task / few-shot / seed as overrides; one row = one training run = one MLflow child run. Every row trains on
the train split and reports top-1 on the evaluation split after the last epoch (the final protocol: VTAB-1k
``train800val200.txt`` -> ``test.txt``, few-shot ``train_meta.list.num_shot_K.seed_S`` -> ``test_meta.list``).

Data:

* ``smoke`` / ``tiny``: the ShapesWorld VTAB-like tasks (``outputs/data/vtab-like``, written on first use; ``shape``,
  ``colour``, ``count``, ``position``, ``orientation``) and their few-shot lists (task ``shape``); ``tiny`` with the
  ShapesWorld-pretrained ``shapes-resnet-tiny`` / ``shapes-convnext-tiny`` (built into ``outputs/pretrained`` on first
  use), ``smoke`` with random weights and a few rows;
* ``paper`` (``DATA=`` required): ``vtab=/path/to/vtab-1k,fewshot=/path/to/few-shot``, or one folder holding
  ``vtab-1k/`` and/or ``few-shot/``, or the VTAB-1k folder itself; ResNet-50 and ConvNeXt-B on the 19 VTAB-1k tasks
  (NOAH's layout) and the few-shot sets given.

The table puts a ``chance`` row (1 / classes of each task: the constant predictor's expected accuracy) above the
methods; rows with several seeds show mean ± standard deviation. The paper gives no per-task figure that we have
checked (conv_adapter/README.md); its claims stand beside the table.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.reproduce import (
    DataCheckError,
    Plan,
    Row,
    RowResult,
    check_data_arg,
    check_datamodules,
    mean_std,
    rows_to_csv,
    save_table,
)

METHODS: dict[str, str] = {
    "linear_probe": "Linear probe", "full_finetune": "Full fine-tuning", "bitfit": "BitFit",
    "conv_parallel": "Conv-Adapter: Convolution Parallel", "conv_sequential": "Conv-Adapter: Convolution Sequential",
    "residual_parallel": "Conv-Adapter: Residual Parallel", "residual_sequential": "Conv-Adapter: Residual Sequential",
}
BACKBONES: dict[str, list[str]] = {"smoke": ["resnet-tiny", "convnext-tiny"], "tiny": ["resnet-tiny", "convnext-tiny"],
                                   "paper": ["resnet50", "convnext-b"]}
SHAPES_TASKS = ("shape", "colour", "count", "position", "orientation")
#: NOAH's VTAB-1k folder names, in the VTAB order (natural, specialized, structured)
VTAB_TASKS = ("cifar", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397",
              "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy", "clevr_count", "clevr_dist", "dmlab",
              "kitti", "dsprites_loc", "dsprites_ori", "smallnorb_azi", "smallnorb_ele")
#: the few-shot sets of the paper's few-shot table (NOAH's few-shot benchmark; folder names not checked [?])
FEWSHOT_SETS = ("fgvc_aircraft", "food101", "oxford_flowers102", "oxford_pets", "stanford_cars")
SHOTS = (1, 2, 4, 8, 16)
#: methods of the few-shot rows (the paper's few-shot comparison: Conv-Adapter vs linear probe and full FT)
FEWSHOT_METHODS = ("linear_probe", "full_finetune", "bitfit", "conv_parallel")
#: tiny: the methods whose rows carry 3 seeds (the headline comparison, where rows are close), on which backbone,
#: and the methods of the tiny few-shot rows (on that backbone; 3 list seeds each)
SEEDED_METHODS = ("linear_probe", "full_finetune", "conv_parallel")
TINY_SEEDED_BACKBONE = "resnet-tiny"
TINY_FEWSHOT_METHODS = ("linear_probe", "full_finetune", "conv_parallel")
#: tiny: training epochs of the VTAB-like rows (the configs' 30 would not fit 20 minutes on 2 cores), and the
#: steps a few-shot row trains for at least (K = 1 is one batch an epoch)
TINY_EPOCHS = 10
TINY_FEWSHOT_STEPS = 50
#: relative cost of a method's row (backward through the backbone or not), for the ETA before the first row
COST = {"linear_probe": 0.5, "bitfit": 0.8, "full_finetune": 1.0}
#: the paper's claims (conv_adapter/README.md, 'What the paper claims'): the only figures we carry
PAPER_CLAIMS = (
    "ResNet-50 Convolution Parallel trains about 3.5% of full fine-tuning's parameters (paper; we read it as gamma 2, "
    "head and norm counted: conv_adapter/README.md)",
    "matches or beats full fine-tuning on the 23 VTAB-1k and FGVC tasks (paper, abstract; per-task figures not "
    "checked against the PDF [?])",
    "few-shot classification: +3.39% on average (paper, abstract; which baseline and which K not checked [?])",
)
DATA_HELP = ("give it as DATA=vtab=/path/to/vtab-1k,fewshot=/path/to/few-shot, DATA=/path/holding/vtab-1k+few-shot or "
             "DATA=/path/to/vtab-1k (make reproduce-conv-adapter PRESET=paper DATA=...; python -m benchmarks.reproduce "
             "conv_adapter --data ...); layouts: VTAB-1k as NOAH distributes it (<task>/train800val200.txt, test.txt, "
             "'path label' lines), few-shot as <dataset>/annotations/train_meta.list.num_shot_K.seed_S, test_meta.list "
             "(conv_adapter/README.md, Running)")
SMOKE_SHOTS = (1,)


def parse_data(data: str | None) -> dict[str, Path]:
    """``vtab=PATH,fewshot=PATH``, a folder holding ``vtab-1k/`` / ``few-shot/``, or the VTAB-1k folder itself."""
    if not data:
        return {}
    if "=" in data:
        out = {}
        for part in data.split(","):
            key, _, path = part.partition("=")
            key = key.strip().lower().replace("-", "")
            if key not in ("vtab", "fewshot"):
                raise DataCheckError(f"DATA={data}: unknown part {key!r} (vtab, fewshot); {DATA_HELP}")
            out[key] = Path(path).expanduser()
        return out
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataCheckError(f"DATA={data}: {root} does not exist; {DATA_HELP}")
    found = {k: root / d for k, d in (("vtab", "vtab-1k"), ("fewshot", "few-shot")) if (root / d).is_dir()}
    if not found and any((root / t).is_dir() for t in VTAB_TASKS):
        found = {"vtab": root}
    if not found:
        raise DataCheckError(f"DATA={data}: {root} holds neither vtab-1k/, few-shot/ nor VTAB-1k task folders; "
                             f"{DATA_HELP}")
    return found


def _key(backbone: str, method: str, task: str, shots: int | None, seed: int) -> str:
    return f"{backbone}_{method}_{task}" + (f"-k{shots}" if shots else "") + f"_s{seed}"


def _specs(preset: str, roots: dict[str, Path]) -> list[dict[str, Any]]:
    """Every row's (backbone, method, task, shots, seed, root)."""
    out: list[dict[str, Any]] = []
    if preset == "smoke":
        for bb in BACKBONES[preset]:
            methods = list(METHODS) if bb == "resnet-tiny" else ["linear_probe", "conv_parallel"]
            out += [dict(backbone=bb, method=m, task="shape", shots=None, seed=0, root=None) for m in methods]
        out += [dict(backbone="resnet-tiny", method=m, task="shape", shots=k, seed=0, root=None)
                for m in ("linear_probe", "conv_parallel") for k in SMOKE_SHOTS]
        return out
    if preset == "tiny":  # 20 minutes on 2 cores: seeds and few-shot on the ResNet (the backbone that transfers)
        for bb in BACKBONES[preset]:
            for m in METHODS:
                seeds = (0, 1, 2) if m in SEEDED_METHODS and bb == TINY_SEEDED_BACKBONE else (0,)
                out += [dict(backbone=bb, method=m, task=t, shots=None, seed=s, root=None)
                        for s in seeds for t in SHAPES_TASKS]
        out += [dict(backbone=TINY_SEEDED_BACKBONE, method=m, task="shape", shots=k, seed=s, root=None)
                for m in TINY_FEWSHOT_METHODS for k in SHOTS for s in (0, 1, 2)]
        return out
    for bb in BACKBONES[preset]:
        if "vtab" in roots:
            out += [dict(backbone=bb, method=m, task=t, shots=None, seed=0, root=roots["vtab"])
                    for m in METHODS for t in VTAB_TASKS]
        if "fewshot" in roots:
            out += [dict(backbone=bb, method=m, task=t, shots=k, seed=s, root=roots["fewshot"])
                    for m in FEWSHOT_METHODS for t in FEWSHOT_SETS for k in SHOTS for s in (0, 1, 2)]
    return out


def _overrides(preset: str, spec: dict[str, Any]) -> list[str]:
    o = [f"--data.init_args.task={spec['task']}", f"--seed_everything={spec['seed']}"]
    if spec["root"] is not None:
        o += [f"--data.init_args.root={spec['root']}", "--data.init_args.synth_if_missing=false"]
    if spec["shots"]:
        o += ["--data.init_args.format=fewshot", f"--data.init_args.shots={spec['shots']}",
              f"--data.init_args.fewshot_seed={spec['seed']}", "--data.init_args.val_file=annotations/test_meta.list"]
    else:  # the final protocol (the configs' default for the paper preset)
        o += ["--data.init_args.train_file=train800val200.txt", "--data.init_args.val_file=test.txt"]
    if preset == "tiny":  # fewer epochs; one validation, after the last epoch
        epochs = TINY_EPOCHS
        if spec["shots"]:
            batches = math.ceil(10 * spec["shots"] / 32)  # 10 classes, batch 32
            epochs = max(TINY_EPOCHS, math.ceil(TINY_FEWSHOT_STEPS / batches))
        o += [f"--trainer.max_epochs={epochs}", f"--trainer.check_val_every_n_epoch={epochs}",
              "--trainer.enable_progress_bar=false"]
    return o


def make_plan(preset: str, data: str | None = None, only: list[str] | None = None) -> Plan:
    roots = parse_data(data)
    check_data_arg("Conv-Adapter", preset, roots, "the real VTAB-1k / few-shot data", DATA_HELP)
    specs = {}
    rows = []
    for spec in _specs(preset, roots):
        key = _key(spec["backbone"], spec["method"], spec["task"], spec["shots"], spec["seed"])
        specs[key] = spec
        where = f"{spec['task']}" + (f", {spec['shots']}-shot" if spec["shots"] else "")
        label = f"{METHODS[spec['method']]}, {spec['backbone']}, {where}, seed {spec['seed']}"
        cost = COST.get(spec["method"], 1.2) * (0.5 if spec["shots"] else 1.0)
        rows.append(Row(key, label, f"conv_adapter/configs/{preset}/{spec['backbone']}/{spec['method']}.yaml",
                        _overrides(preset, spec), cost))
    # seed 0 of every row first, backbone by backbone, few-shot after the tasks: a cut run already holds one seed
    order = {bb: i for i, bb in enumerate(BACKBONES[preset])}
    rows.sort(key=lambda r: (specs[r.key]["seed"], order[specs[r.key]["backbone"]], bool(specs[r.key]["shots"])))
    if only:
        unknown = set(only) - set(specs)
        if unknown:
            raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are {sorted(specs)}")
        rows = [r for r in rows if r.key in only]
    # tiny: two 1-thread rows at once use a 2-core machine best; smoke rows are too short to pay a process start
    plan = Plan("conv_adapter", preset, rows, cli_module="conv_adapter", experiment="conv_adapter",
                info={"data": data, "specs": specs}, jobs=2 if preset == "tiny" else 1)
    plan.prepare = lambda: prepare(plan)
    if roots:
        plan.check = lambda: check_datamodules(
            plan, f"Conv-Adapter's {preset} preset reads DATA={data}", DATA_HELP[0].upper() + DATA_HELP[1:] + ".")
    return plan


def prepare(plan: Plan) -> None:
    """Write the ShapesWorld VTAB-like tasks and build the tiny pretrained backbones the rows need (once)."""
    if plan.info.get("data") or not plan.rows:
        return
    from common.data.image_classification import ImageClassificationDataModule

    ImageClassificationDataModule(task="shape").prepare_data()  # writes outputs/data/vtab-like if missing
    if plan.preset == "tiny":  # the first row's backbone now; the other is built by its first row (a file lock
        from common.models import ensure_pretrained  # keeps two rows from building it twice)

        ensure_pretrained(f"shapes-{plan.info['specs'][plan.rows[0].key]['backbone']}")


# ---------------------------------------------------------------------------------------------------------------- table
def num_classes(preset: str, task: str) -> int | None:
    if preset == "paper":
        from common.data.image_lists import VTAB_NUM_CLASSES

        return VTAB_NUM_CLASSES.get(task)
    from common.data.synth.vtab import class_names

    return len(class_names(task))


def _column(spec: dict[str, Any]) -> str:
    return spec["task"] + (f" {spec['shots']}-shot" if spec["shots"] else "")


def long_rows(plan: Plan, results: dict[str, RowResult]) -> list[dict[str, Any]]:
    """One dict per run (CSV lines), plus the chance line of every column."""
    out = []
    columns: dict[str, dict[str, Any]] = {}
    for row in plan.rows:
        res = results.get(row.key)
        if res is None:
            continue
        spec = plan.info["specs"][row.key]
        columns.setdefault(_column(spec), spec)
        m = res.metrics if res.status == "finished" else {}
        out.append({"key": row.key, "backbone": spec["backbone"], "method": spec["method"], "task": spec["task"],
                    "shots": spec["shots"] or "", "seed": spec["seed"], "status": res.status,
                    "trainable": res.trainable_params,
                    "top1": 100 * m["val/acc1"] if "val/acc1" in m else None,
                    "mean_class": 100 * m["val/mean_class_acc"] if "val/mean_class_acc" in m else None,
                    "minutes": res.seconds / 60, "run_id": res.run_id})
    for col, spec in columns.items():
        n = num_classes(plan.preset, spec["task"])
        out.append({"key": f"chance_{col.replace(' ', '_')}", "backbone": "", "method": "chance", "task": spec["task"],
                    "shots": spec["shots"] or "", "seed": "", "status": "", "trainable": 0,
                    "top1": 100 / n if n else None, "mean_class": 100 / n if n else None, "minutes": 0.0,
                    "run_id": ""})
    return out


def markdown(plan: Plan, lines_: list[dict[str, Any]], header: str) -> str:
    cols: list[str] = []
    for r in lines_:
        c = r["task"] + (f" {r['shots']}-shot" if r["shots"] else "")
        if c not in cols:
            cols.append(c)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in lines_:
        groups.setdefault((r["backbone"], r["method"]), []).append(r)
    full = {bb: max((r["trainable"] or 0) for r in rs) for (bb, m), rs in groups.items() if m == "full_finetune"}
    vtab_cols = [c for c in cols if "shot" not in c]
    lines = [header, "",
             "| Backbone | Method | Trainable | % of full FT | " + " | ".join(cols) + " | Mean (tasks) |",
             "|---|---|---:|---:|" + "---:|" * (len(cols) + 1)]
    order = ["chance", *METHODS]
    for (bb, m), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "", kv[0][0], order.index(kv[0][1]))):
        cells, means = [], []
        for c in cols:
            vals = [r["top1"] for r in rs if r["top1"] is not None
                    and r["task"] + (f" {r['shots']}-shot" if r["shots"] else "") == c]
            cells.append(mean_std(vals))
            if c in vtab_cols and vals:
                means.append(statistics.mean(vals))
        trainable = max((r["trainable"] or 0) for r in rs)
        pct = f"{100 * trainable / full[bb]:.1f}%" if bb in full and full[bb] and m != "chance" else "-"
        failed = sum(r["status"] == "failed" for r in rs)
        name = ("Chance (1 / classes)" if m == "chance" else METHODS[m]) + (f" ({failed} failed)" if failed else "")
        mean = f"{statistics.mean(means):.1f}" if len(means) == len(vtab_cols) and means else "-"
        lines.append(f"| {bb or '-'} | {name} | {trainable if m != 'chance' else '-'} | {pct} | "
                     + " | ".join(cells) + f" | {mean} |")
    lines += ["", "The paper's claims (no per-task figure of the paper is carried; conv_adapter/README.md):", ""]
    lines += [f"- {c}" for c in PAPER_CLAIMS]
    return "\n".join(lines)


CSV_FIELDS = ["key", "backbone", "method", "task", "shots", "seed", "status", "trainable", "top1", "mean_class",
              "minutes", "run_id"]




def write_results(plan: Plan, results: dict[str, RowResult], parent: str,
                  results_dir: Path | None = None) -> tuple[str, list[Path]]:
    """Write ``conv_adapter_<preset>.md/.csv`` and log every run's top-1 to the parent run."""
    from common import tracking

    lines_ = long_rows(plan, results)
    client = tracking.client()
    for r in lines_:
        if r["top1"] is not None and r["method"] != "chance":
            client.log_metric(parent, f"table/{r['key']}/top1", float(r["top1"]))
    data = plan.info.get("data") or ("the ShapesWorld VTAB-like tasks (64 px; 200 train / 200 test images a task; "
                                     "few-shot lists of the shape task), generated")
    weights = {"smoke": "random-weight tiny backbones, 2 steps a row: a pipeline check, not a result",
               "tiny": "the ShapesWorld-pretrained shapes-resnet-tiny / shapes-convnext-tiny",
               "paper": "ResNet-50 (torchvision V2) and ConvNeXt-B (ImageNet-22k)"}[plan.preset]
    trained = sum(res.seconds for res in results.values())
    header = (f"# Conv-Adapter table, `{plan.preset}` preset\n\n"
              f"Data: {data}; backbones: {weights}. Generated {time.strftime('%Y-%m-%d %H:%M')}, git "
              f"{tracking.git_sha(short=True)}, MLflow parent run `{parent}`; training time of the rows "
              f"{trained / 60:.1f} min. Top-1 (%) on the test split after the last epoch (final protocol); "
              "several seeds: mean ± standard deviation (few-shot: list seed = training seed). Trainable: "
              "parameters the row trains (adapters + trained norms + head).")
    md = markdown(plan, lines_, header)
    return md, save_table(plan, md, rows_to_csv(lines_, CSV_FIELDS), results_dir)
