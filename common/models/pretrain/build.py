"""One cache entry: pretrain a tiny backbone and write ``weights.pt`` + ``manifest.json`` (:func:`pretrain`).

Part of :mod:`common.models.pretrain` (which re-exports every public name).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from common.data.synth import world as W
from common.models.cache import MANIFEST_FILE, WEIGHTS_FILE, cache_dir, file_sha256
from common.models.pretrain.data import DATA_SEED, LABELS, get_data, pool_sizes
from common.models.pretrain.evaluate import clip_zero_shot, probe_metrics
from common.models.pretrain.train import train_clip, train_timm
from common.models.registry import get_shapes_model


def pretrain(
    name: str,
    *,
    budget: float = 1.0,
    root: Path | None = None,
    data_budget: float | None = None,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pretrain one tiny backbone on ShapesWorld and write ``<root>/<name>/{weights.pt,manifest.json}``.

    Args:
        name: a name from :data:`common.models.registry.SHAPES_MODELS`.
        budget: multiple of the recipe's steps (and of the data pool, up to 1.0).
        root: cache root (default ``outputs/pretrained``).
        data_budget: scale of the data pool if not ``budget`` (see :func:`pool_sizes`).
        recipe: overrides of the :class:`~common.models.registry.TrainRecipe` fields (e.g. ``{"batch_size": 32}``).

    Not locked: call :func:`common.models.ensure_pretrained` (which locks) unless you own the cache folder.
    Returns the manifest.
    """
    if budget <= 0:
        raise ValueError(f"pretrain: budget must be positive, got {budget}")
    data_budget = budget if data_budget is None else data_budget
    spec = get_shapes_model(name)
    if recipe:
        spec = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, **recipe))
    t0, c0 = time.perf_counter(), time.process_time()
    data = get_data(data_budget, spec.image_size)
    t_data = time.perf_counter() - t0
    t1 = time.perf_counter()
    if spec.kind == "clip":
        model, stats = train_clip(spec, data, budget)
    else:
        model, stats = train_timm(spec, data, budget)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    if spec.kind == "clip":
        from common.models.clip import load_clip

        _, tokenizer, pre = load_clip(spec.name, None)
        metrics = clip_zero_shot(model, tokenizer, pre, data)
        head = None
    else:
        metrics = probe_metrics(model, spec, data)
        head = {"num_classes": len(LABELS), "labels": list(LABELS), "loss": "softmax cross-entropy per label group (things, colours, stuff) on normalised multi-hot targets"}
    t_eval = time.perf_counter() - t2

    d = cache_dir(name, root)
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST_FILE).unlink(missing_ok=True)  # the entry is invalid until both files are written
    tmp = d / (WEIGHTS_FILE + f".tmp{os.getpid()}")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, d / WEIGHTS_FILE)
    import open_clip
    import timm

    n_train, n_eval, per_combo = pool_sizes(data_budget)
    manifest = {
        "name": name,
        "kind": spec.kind,
        "description": spec.description,
        "arch": json.loads(json.dumps(spec.arch_config())),
        "input": {"image_size": spec.image_size, "mean": spec.mean, "std": spec.std},
        "recipe": {**asdict(spec.recipe), **stats},
        "seed": spec.recipe.seed,
        "budget": budget,
        "data_budget": data_budget,
        "data": {
            "world": "common.data.synth.world",
            "fingerprint": data.fingerprint,
            "seed": DATA_SEED,
            "train_images": n_train,
            "eval_images": n_eval,
            "held_out_images": per_combo * len(W.HELD_OUT_COMBOS),
            "held_out_combos": sorted(list(c) for c in W.HELD_OUT_COMBOS),
        },
        "head": head,
        "metrics": metrics,
        "time_s": {
            "render_data": round(t_data, 2),
            "train": round(t_train, 2),
            "eval": round(t_eval, 2),
            "total": round(time.perf_counter() - t0, 2),
            "cpu_total": round(time.process_time() - c0, 2),
        },
        "weights": {"file": WEIGHTS_FILE, "sha256": file_sha256(d / WEIGHTS_FILE)},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "open_clip": open_clip.__version__,
            "python": platform.python_version(),
        },
        "torch_threads": torch.get_num_threads(),
    }
    tmp = d / (MANIFEST_FILE + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, d / MANIFEST_FILE)
    return manifest

