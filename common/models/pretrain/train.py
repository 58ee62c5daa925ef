"""The training loops of the ShapesWorld pretraining: contrastive CLIP, multi-label timm classifiers.

Part of :mod:`common.models.pretrain` (which re-exports every public name).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.models.pretrain.data import LABEL_GROUPS, LABELS, PretrainData, progress_bar, to_tensor
from common.models.registry import ShapesModel
from common.optim import adamw, warmup_cosine


def multilabel_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: tuple[float, ...] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Sum over the label groups (things, colours, stuff) of a softmax cross-entropy with the group's multi-hot
    target normalised to sum 1 (what is in the scene, shared between the things present), group ``i`` weighted by
    ``weights[i]``."""
    if len(weights) != len(LABEL_GROUPS):
        raise ValueError(f"multilabel_loss: {len(weights)} weights for {len(LABEL_GROUPS)} label groups "
                         "(things, colours, stuff); see TrainRecipe.loss_weights in common/models/registry.py")
    loss = logits.new_zeros(())
    for w, g in zip(weights, LABEL_GROUPS, strict=True):
        t = targets[:, g]
        t = t / t.sum(-1, keepdim=True).clamp_min(1.0)
        has = t.sum(-1) > 0
        if has.any():
            loss = loss + w * F.cross_entropy(logits[has, g], t[has])
    return loss


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
    with progress_bar() as prog:
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
        if spec.recipe.rotate:
            x = torch.rot90(x, int(rng.integers(4)), (2, 3))  # labels do not depend on orientation
        return multilabel_loss(model(x), targets[idx], spec.recipe.loss_weights)

    losses = _fit(model, spec, steps, _batches(len(images), batch, steps, rng), loss_of)
    return model, _stats(steps, batch, losses)


