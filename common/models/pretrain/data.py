"""The data of the ShapesWorld pretraining: label vocabulary, scene specs, rendered pools (made once per process).

Part of :mod:`common.models.pretrain` (which re-exports every public name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from common.data.synth import world as W

#: multi-label targets of the timm pretraining: the things (shapes, person), the colours, the stuff classes
LABELS: tuple[str, ...] = (*W.SHAPES, "person", *(f"colour:{c}" for c in W.COLOURS), *(f"stuff:{s}" for s in W.STUFF))
_LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
#: the label groups; each is trained with a softmax cross-entropy against its normalised multi-hot target
LABEL_GROUPS: tuple[slice, ...] = (
    slice(0, len(W.SHAPES) + 1),
    slice(len(W.SHAPES) + 1, len(W.SHAPES) + 1 + len(W.COLOURS)),
    slice(len(W.SHAPES) + 1 + len(W.COLOURS), len(LABELS)),
)

#: pool sizes at budget 1.0
POOL_SIZE = 12000
EVAL_SIZE = 1200
HELD_OUT_PER_COMBO = 60
#: the seed of the data (the model seeds are in each recipe)
DATA_SEED = 1234


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
        with progress_bar() as prog:
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


def progress_bar():
    """The rich progress bar of the pretraining (description, bar, done/total, info, elapsed, ETA)."""
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

