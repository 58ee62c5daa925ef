"""Sample lists of the video datamodules: the annotated sample, class subsets, few-shot subsets, duplicates.

Plain functions over ``(path, label)`` samples, no decoding and no Lightning: ViFi-CLIP's base-to-novel protocol
(:func:`class_split`), its K-shot protocol (:func:`few_shot_subset`), and the duplicate check that the
Something-Something-v2 annotations need (:func:`find_duplicates`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["VideoSample", "class_split", "few_shot_subset", "DuplicateLabelError", "find_duplicates"]


@dataclass(frozen=True, order=True)
class VideoSample:
    """One annotated video: absolute path and class index."""

    path: str
    label: int


def class_split(num_classes: int, split: Literal["all", "base", "novel"], seed: int = 0,
                base_fraction: float = 0.5) -> list[int]:
    """Original class ids of a seeded base/novel split (ViFi-CLIP's base-to-novel protocol: a random half of the
    classes is base, the rest novel). Returned sorted; ``all`` returns every class."""
    if split == "all":
        return list(range(num_classes))
    if split not in ("base", "novel"):
        raise ValueError(f"class_split must be all, base or novel, got {split!r}")
    perm = np.random.default_rng(seed).permutation(num_classes)
    n_base = int(round(num_classes * base_fraction))
    if not 0 < n_base < num_classes:
        raise ValueError(f"base_fraction {base_fraction} leaves no base or no novel class out of {num_classes}")
    chosen = perm[:n_base] if split == "base" else perm[n_base:]
    return sorted(int(c) for c in chosen)


def few_shot_subset(samples: Sequence[VideoSample], num_shots: int, seed: int = 0) -> list[VideoSample]:
    """K samples per class drawn with ``seed`` (ViFi-CLIP's K-shot protocol); classes with fewer keep all."""
    if num_shots < 1:
        raise ValueError(f"num_shots must be >= 1, got {num_shots}")
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s.label, []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    short = []
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < num_shots:
            short.append(label)
            keep.extend(idx)
        else:
            keep.extend(int(i) for i in rng.choice(idx, size=num_shots, replace=False))
    if short:
        warnings.warn(f"{len(short)} classes have fewer than {num_shots} training videos; all of theirs are kept",
                      stacklevel=2)
    return [samples[i] for i in sorted(keep)]


class DuplicateLabelError(ValueError):
    """The same video is annotated twice with two different labels."""


def find_duplicates(samples: Sequence[VideoSample], names: Sequence[str], where: str
                    ) -> tuple[list[VideoSample], list[VideoSample]]:
    """``(unique samples in first-seen order, repeated samples)``; the same path with two different labels raises
    :class:`DuplicateLabelError` naming the file ``where``, the video and both class names."""
    first: dict[str, VideoSample] = {}
    unique, repeated = [], []
    for s in samples:
        seen = first.get(s.path)
        if seen is None:
            first[s.path] = s
            unique.append(s)
        elif seen.label == s.label:
            repeated.append(s)
        else:
            raise DuplicateLabelError(
                f"{where}: video {s.path} is annotated twice with different labels: {names[seen.label]!r} "
                f"(class {seen.label}) and {names[s.label]!r} (class {s.label}); fix the annotation file")
    return unique, repeated
