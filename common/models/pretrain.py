"""Pretraining of the tiny ShapesWorld backbones (``python -m common.data.synth pretrain --all`` or ``make pretrain``).

* ``shapes-clip-tiny``: an open_clip CLIP trained contrastively (open_clip's ``ClipLoss``) on ShapesWorld
  image-caption pairs. The colour-shape pairs of :data:`~common.data.synth.world.HELD_OUT_COMBOS` never appear, so
  zero-shot accuracy on them measures composition.
* ``shapes-swin-tiny`` / ``shapes-resnet-tiny`` / ``shapes-convnext-tiny``: timm models trained as multi-label
  classifiers of what is in the scene: the shapes (and person), their colours, and the stuff classes.

All of them share one pool of rendered scenes (made once per process). The result goes to
``outputs/pretrained/<name>/weights.pt`` with a ``manifest.json``: architecture, recipe, seed, budget, data
fingerprint, final metrics (zero-shot accuracy for the CLIP, linear-probe accuracy against a random initialisation of
the same architecture for the timm models) and the time taken.

The budget (default 1.0) scales the number of steps and the size of the data pool; a small budget (e.g. 0.05) gives
a quick, weaker model for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.data.synth import world as W
from common.models.cache import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    cache_dir,
    ensure_pretrained,
    file_sha256,
    read_manifest,
)
from common.models.registry import SHAPES_MODELS, ShapesModel, get_shapes_model
from common.models.text_head import CLIPTextClassifier
from common.optim import adamw, warmup_cosine

#: multi-label targets of the timm pretraining: the things (shapes, person), the colours, the stuff classes
LABELS: tuple[str, ...] = (*W.SHAPES, "person", *(f"colour:{c}" for c in W.COLOURS), *(f"stuff:{s}" for s in W.STUFF))
_LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
#: the label groups; each is trained with a softmax cross-entropy against its normalised multi-hot target
LABEL_GROUPS: tuple[slice, ...] = (
    slice(0, len(W.SHAPES) + 1),
    slice(len(W.SHAPES) + 1, len(W.SHAPES) + 1 + len(W.COLOURS)),
    slice(len(W.SHAPES) + 1 + len(W.COLOURS), len(LABELS)),
)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the label groups (things, colours, stuff) of a softmax cross-entropy with the group's multi-hot
    target normalised to sum 1 (what is in the scene, shared between the things present)."""
    loss = logits.new_zeros(())
    for g in LABEL_GROUPS:
        t = targets[:, g]
        t = t / t.sum(-1, keepdim=True).clamp_min(1.0)
        has = t.sum(-1) > 0
        if has.any():
            loss = loss + F.cross_entropy(logits[has, g], t[has])
    return loss

#: pool sizes at budget 1.0
POOL_SIZE = 12000
EVAL_SIZE = 1200
HELD_OUT_PER_COMBO = 60
#: the seed of the data (the model seeds are in each recipe)
DATA_SEED = 1234

#: zero-shot prompt templates (the class prompt is "{colour} {shape}"); embeddings are averaged over templates
ZERO_SHOT_TEMPLATES: tuple[str, ...] = ("a {}", *(f"a {{}} on {s}" for s in W.STUFF))


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Pool:
    """Rendered scenes: images (N, H, W, 3) uint8, multi-hot ``targets`` (N, len(LABELS)), two captions per image
    (full, and without the background), and for single-object pools the ``shape`` / ``colour`` index of the object."""

    images: np.ndarray
    targets: np.ndarray
    captions: list[str]
    short_captions: list[str]
    shape: np.ndarray
    colour: np.ndarray
    fingerprint: str
    #: index in COLOURS of the first thing's colour (the first shape, else the person): the hard-negative group
    first_colour: np.ndarray | None = None


def _scene_targets(spec: W.SceneSpec) -> np.ndarray:
    y = np.zeros(len(LABELS), dtype=np.float32)
    for o in spec.objects:
        y[_LABEL_INDEX[o.shape]] = 1
        y[_LABEL_INDEX[f"colour:{o.colour}"]] = 1
    if spec.person is not None:
        y[_LABEL_INDEX["person"]] = 1
        y[_LABEL_INDEX[f"colour:{spec.person.colour}"]] = 1
    for s in spec.stuff:
        y[_LABEL_INDEX[f"stuff:{s}"]] = 1
    return y


def _short_caption(spec: W.SceneSpec) -> str:
    return W.make_caption(W.SceneSpec(stuff=(), objects=spec.objects, person=spec.person, seed=spec.seed))


def render_pool(
    specs: list[W.SceneSpec], size: int, *, progress: Callable[[int], None] | None = None
) -> Pool:
    """Render scenes into a :class:`Pool` (``progress(k)`` is called as they are made)."""
    n = len(specs)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    targets = np.zeros((n, len(LABELS)), dtype=np.float32)
    shape = np.full(n, -1, dtype=np.int64)
    colour = np.full(n, -1, dtype=np.int64)
    first_colour = np.full(n, -1, dtype=np.int64)
    colour_names = list(W.COLOURS)
    captions, short = [], []
    h = hashlib.sha256()
    for i, spec in enumerate(specs):
        sc = W.render_scene(spec, size)
        images[i] = sc.image
        targets[i] = _scene_targets(spec)
        captions.append(sc.caption)
        short.append(_short_caption(spec))
        if len(spec.objects) == 1:
            shape[i] = W.SHAPES.index(spec.objects[0].shape)
            colour[i] = list(W.COLOURS).index(spec.objects[0].colour)
        if spec.objects:
            first_colour[i] = colour_names.index(spec.objects[0].colour)
        elif spec.person is not None:
            first_colour[i] = colour_names.index(spec.person.colour)
        h.update(sc.image.tobytes())
        h.update(sc.caption.encode())
        if progress is not None:
            progress(1)
    return Pool(images, targets, captions, short, shape, colour, h.hexdigest()[:16], first_colour)


def train_specs(n: int, seed: int = DATA_SEED) -> list[W.SceneSpec]:
    """Pretraining scenes: 60% one shape, 40% two, a person in 15%; never a held-out colour-shape pair."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = 1 if rng.random() < 0.6 else 2
        spec = W.sample_scene(rng, num_objects=(k, k), person_prob=0.15)
        if k == 1 and spec.person is None and rng.random() < 0.5:  # close-ups: a big shape shows its outline
            o = spec.objects[0]
            o.size = float(rng.uniform(0.5, 0.75))
            o.x, o.y = (float(rng.uniform(o.size / 2, 1 - o.size / 2)) for _ in range(2))
        out.append(spec)
    return out


def eval_specs(n: int, per_combo: int, seed: int = DATA_SEED + 1) -> tuple[list[W.SceneSpec], list[W.SceneSpec]]:
    """Evaluation scenes with exactly one shape and no person: (seen colour-shape pairs, held-out pairs)."""
    rng = np.random.default_rng(seed)
    seen = [W.sample_scene(rng, num_objects=(1, 1), person_prob=0.0) for _ in range(n)]
    held = []
    for colour, shape in sorted(W.HELD_OUT_COMBOS):
        for _ in range(per_combo):
            held.append(
                W.sample_scene(rng, num_objects=(1, 1), person_prob=0.0, shapes=[shape], colours=[colour], exclude_combos=())
            )
    return seen, held


@dataclass
class PretrainData:
    train: Pool
    eval_seen: Pool
    eval_held: Pool
    image_size: int

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(
            (self.train.fingerprint + self.eval_seen.fingerprint + self.eval_held.fingerprint).encode()
        ).hexdigest()[:16]


_DATA_CACHE: dict[tuple[int, int, int, int], PretrainData] = {}


def pool_sizes(budget: float) -> tuple[int, int, int]:
    """(train pool, eval pool, held-out images per combo) at a budget."""
    return (
        max(256, round(POOL_SIZE * min(budget, 1.0))),
        int(np.clip(round(EVAL_SIZE * budget), 600, EVAL_SIZE)),
        int(np.clip(round(HELD_OUT_PER_COMBO * budget), 40, HELD_OUT_PER_COMBO)),
    )


def get_data(budget: float, image_size: int = 64) -> PretrainData:
    """The pretraining / evaluation pools for a budget (rendered once per process, with a progress bar)."""
    n_train, n_eval, per_combo = pool_sizes(budget)
    key = (n_train, n_eval, per_combo, image_size)
    if key not in _DATA_CACHE:
        train = train_specs(n_train)
        seen, held = eval_specs(n_eval, per_combo)
        with _progress() as prog:
            task = prog.add_task("render ShapesWorld", total=len(train) + len(seen) + len(held), info="")
            adv = lambda k: prog.advance(task, k)  # noqa: E731
            _DATA_CACHE[key] = PretrainData(
                render_pool(train, image_size, progress=adv),
                render_pool(seen, image_size, progress=adv),
                render_pool(held, image_size, progress=adv),
                image_size,
            )
    return _DATA_CACHE[key]


def to_tensor(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def _batches(n: int, batch: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        yield order[pos : pos + batch]
        pos += batch


def _grouped_batches(
    groups: np.ndarray, batch: int, steps: int, rng: np.random.Generator, frac: float
) -> Iterator[np.ndarray]:
    """Batches in which a fraction ``frac`` of the images come in pairs sharing a group key (the colour of the first
    object): hard negatives for the contrastive loss, which then cannot tell such pairs apart by colour alone."""
    n = len(groups)
    members = {int(g): np.flatnonzero(groups == g) for g in np.unique(groups)}
    n_pairs = int(batch * frac) // 2
    for idx in _batches(n, batch - n_pairs, steps, rng):
        partners = []
        for i in idx[:n_pairs]:
            m = members[int(groups[i])]
            j = int(m[rng.integers(len(m))])
            partners.append(j if j != i else int(m[(np.searchsorted(m, i) + 1) % len(m)]))
        out = np.concatenate([idx, np.asarray(partners, dtype=idx.dtype)])
        yield out


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )


# --------------------------------------------------------------------------------------------------------------------
# Trainers
# --------------------------------------------------------------------------------------------------------------------


def _steps(spec: ShapesModel, budget: float) -> int:
    return max(10, round(spec.recipe.steps * budget))


#: no weight decay (besides every 1-D tensor) for these name patterns: the pretraining recipe's own rule, kept so the
#: cached weights do not change (narrower than common.optim.NO_DECAY: CLIP's positional_embedding, token_embedding and
#: logit_scale; timm's 1-D norms and biases)
PRETRAIN_NO_DECAY: tuple[str, ...] = (r"embedding", r"logit_scale", r"token")


def _fit(
    model: torch.nn.Module,
    spec: ShapesModel,
    steps: int,
    batches: Iterator[np.ndarray],
    loss_of: Callable[[np.ndarray], torch.Tensor],
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """AdamW with linear warm-up + cosine decay (:mod:`common.optim`, one scheduler step per optimiser step) over
    ``batches``, a progress bar with the running loss; returns the per-step losses. ``loss_of(idx)`` builds the batch's loss; ``after_step`` runs after each optimiser step."""
    opt = adamw(model, spec.recipe.lr, spec.recipe.weight_decay, no_decay=PRETRAIN_NO_DECAY)
    # the factor (k + 1) / W for steps k < W, then the cosine from step W (ramp_steps >= 1 also when W == 1)
    warmup = max(1, int(steps * spec.recipe.warmup_frac))
    sched = warmup_cosine(opt, steps, warmup, start_factor=1.0 / warmup, ramp_steps=max(1, warmup - 1))
    losses: list[float] = []
    model.train()
    with _progress() as prog:
        task = prog.add_task(f"pretrain {spec.name}", total=steps, info="")
        for idx in batches:
            loss = loss_of(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            losses.append(float(loss.detach()))
            prog.update(task, advance=1, info=f"loss {np.mean(losses[-10:]):.4f}")
    model.eval()
    return losses


def _stats(steps: int, batch: int, losses: list[float]) -> dict[str, Any]:
    return {"steps": steps, "batch_size": batch, "final_loss": float(np.mean(losses[-10:]))}


def train_clip(spec: ShapesModel, data: PretrainData, budget: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Contrastive pretraining of the tiny CLIP; returns the model and its training stats."""
    import open_clip

    from common.models.clip import load_clip

    torch.manual_seed(spec.recipe.seed)
    model, tokenizer, pre = load_clip(spec.name, None)
    tok_full = tokenizer(data.train.captions)
    tok_short = tokenizer(data.train.short_captions)
    images = data.train.images
    loss_fn = open_clip.ClipLoss()
    steps = _steps(spec, budget)
    batch = min(spec.recipe.batch_size, len(images))
    rng = np.random.default_rng(spec.recipe.seed)
    if spec.recipe.hard_negative_frac > 0:
        batches = _grouped_batches(data.train.first_colour, batch, steps, rng, spec.recipe.hard_negative_frac)
    else:
        batches = _batches(len(images), batch, steps, rng)

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        x = to_tensor(images[idx], pre.mean, pre.std)
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
        x[flip] = x[flip].flip(-1)
        use_short = torch.from_numpy(rng.random(len(idx)) < spec.recipe.short_caption_frac)[:, None]
        text = torch.where(use_short, tok_short[idx], tok_full[idx])
        img_f, txt_f, scale = model(x, text)[:3]
        return loss_fn(img_f, txt_f, scale)

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    losses = _fit(model, spec, steps, batches, loss_of, clamp_scale)
    return model, _stats(steps, batch, losses)


@torch.no_grad()
def clip_zero_shot(model: torch.nn.Module, tokenizer: Any, pre: Any, data: PretrainData) -> dict[str, float]:
    """Zero-shot classification of one-shape images into all colour-shape pairs (chance 1/|pairs|) by caption
    prompts, on seen pairs and on the held-out pairs; also the shape and colour part of the answer."""
    pairs = [(c, s) for s in W.SHAPES for c in W.COLOURS]
    head = CLIPTextClassifier(model, tokenizer, [f"{c} {s}" for c, s in pairs], ZERO_SHOT_TEMPLATES)
    text = head().embeddings
    pair_shape = torch.tensor([W.SHAPES.index(s) for _, s in pairs])
    pair_colour = torch.tensor([list(W.COLOURS).index(c) for c, _ in pairs])
    out: dict[str, float] = {"chance": 1.0 / len(pairs)}
    for tag, pool in (("seen", data.eval_seen), ("held_out", data.eval_held)):
        img = []
        for i in range(0, len(pool.images), 256):
            img.append(F.normalize(model.encode_image(to_tensor(pool.images[i : i + 256], pre.mean, pre.std)), dim=-1))
        pred = (torch.cat(img) @ text.T).argmax(-1)
        ps, pc = pair_shape[pred], pair_colour[pred]
        ys, yc = torch.from_numpy(pool.shape), torch.from_numpy(pool.colour)
        out[f"zero_shot_acc_{tag}"] = float(((ps == ys) & (pc == yc)).float().mean())
        out[f"zero_shot_shape_acc_{tag}"] = float((ps == ys).float().mean())
        out[f"zero_shot_colour_acc_{tag}"] = float((pc == yc).float().mean())
    return out


def train_timm(spec: ShapesModel, data: PretrainData, budget: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Multi-label pretraining of a tiny timm model on what is in each scene."""
    from common.models.timm_models import build_timm

    torch.manual_seed(spec.recipe.seed)
    model = build_timm(spec.name, None, num_classes=len(LABELS))
    images, targets = data.train.images, torch.from_numpy(data.train.targets)
    steps = _steps(spec, budget)
    batch = min(spec.recipe.batch_size, len(images))
    rng = np.random.default_rng(spec.recipe.seed)

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        x = to_tensor(images[idx], spec.mean, spec.std)
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
        x[flip] = x[flip].flip(-1)
        x = torch.rot90(x, int(rng.integers(4)), (2, 3))  # labels do not depend on orientation
        return multilabel_loss(model(x), targets[idx])

    losses = _fit(model, spec, steps, _batches(len(images), batch, steps, rng), loss_of)
    return model, _stats(steps, batch, losses)


@torch.no_grad()
def timm_features(model: torch.nn.Module, images: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    """Pooled pre-logit features of a timm classifier."""
    out = []
    for i in range(0, len(images), 256):
        x = to_tensor(images[i : i + 256], mean, std)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out)


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *, l2: float = 1e-2
) -> float:
    """Accuracy of a multinomial logistic-regression probe (standardised features, L-BFGS) on frozen features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(a.shape[1], k, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(-1) == test_y).float().mean())


def probe_metrics(model: torch.nn.Module, spec: ShapesModel, data: PretrainData) -> dict[str, float]:
    """Shape and colour linear-probe accuracy on frozen features of ``model`` and of a random init of the same architecture,
    plus the pretraining head's own accuracy on one-shape images."""
    from common.models.timm_models import build_timm

    pool = data.eval_seen
    half = len(pool.images) // 2
    ys = torch.from_numpy(pool.shape)
    yc = torch.from_numpy(pool.colour)
    out: dict[str, float] = {"probe_chance": 1.0 / len(W.SHAPES)}
    torch.manual_seed(spec.recipe.seed + 1)
    random_model = build_timm(spec.name, None, num_classes=len(LABELS)).eval()
    for tag, m in (("pretrained", model), ("random_init", random_model)):
        f = timm_features(m, pool.images, spec.mean, spec.std)
        out[f"probe_shape_acc_{tag}"] = linear_probe(f[:half], ys[:half], f[half:], ys[half:])
        out[f"probe_colour_acc_{tag}"] = linear_probe(f[:half], yc[:half], f[half:], yc[half:])
    with torch.no_grad():
        logits = torch.cat(
            [model(to_tensor(pool.images[i : i + 256], spec.mean, spec.std)) for i in range(0, len(pool.images), 256)]
        )
    n_shape = len(W.SHAPES)
    n_col = len(W.COLOURS)
    shape_pred = logits[:, :n_shape].argmax(-1)
    colour_pred = logits[:, n_shape + 1 : n_shape + 1 + n_col].argmax(-1)
    out["head_shape_acc"] = float((shape_pred == ys).float().mean())
    out["head_colour_acc"] = float((colour_pred == torch.from_numpy(pool.colour)).float().mean())
    return out


# --------------------------------------------------------------------------------------------------------------------
# Building a cache entry
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


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
