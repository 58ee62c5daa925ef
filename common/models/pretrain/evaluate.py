"""What the ShapesWorld pretraining bought: zero-shot accuracy of the CLIP, linear probes of the timm models.

Part of :mod:`common.models.pretrain` (which re-exports every public name).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.data.synth import world as W
from common.models.pretrain.data import LABELS, PretrainData, to_tensor
from common.models.registry import ShapesModel
from common.models.text_head import CLIPTextClassifier

#: zero-shot prompt templates (the class prompt is "{colour} {shape}"); embeddings are averaged over templates
ZERO_SHOT_TEMPLATES: tuple[str, ...] = ("a {}", *(f"a {{}} on {s}" for s in W.STUFF))


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


