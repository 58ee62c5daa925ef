"""COCO-format panoptic categories: the category record, reading them, and class subsets (base / novel / names).

The contiguous class index ``k`` of a category is its position in the categories list sorted by COCO id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PanopticDataError", "PanopticCategory", "read_json", "load_categories", "resolve_class_subset"]


class PanopticDataError(ValueError):
    """A broken COCO panoptic dataset or sample (the message names the file, the image and the segment)."""


# ----------------------------------------------------------------------------------------------------------------
# categories
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanopticCategory:
    """One category: COCO ``id``, ``name``, ``isthing``, ``color``, ``supercategory`` and whether it is ``novel``."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)
    supercategory: str = ""
    novel: bool = False


def read_json(path: Path) -> Any:
    """A JSON file; invalid JSON is a :class:`PanopticDataError` naming the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise PanopticDataError(f"{path} is not valid JSON ({err})") from None


def load_categories(source: str | Path | Sequence[dict[str, Any]]) -> list[PanopticCategory]:
    """Categories from a list of dicts, a categories JSON (a list) or a panoptic JSON (its ``categories``), sorted by id."""
    where = "categories"
    if isinstance(source, (str, Path)):
        where = str(source)
        data = read_json(Path(source))
        items = data.get("categories") if isinstance(data, dict) else data
    else:
        items = source
    if not items:
        raise PanopticDataError(f"{where}: no categories found")
    cats = []
    for c in items:
        try:
            cats.append(PanopticCategory(
                id=int(c["id"]), name=str(c["name"]), isthing=bool(c.get("isthing", 0)),
                color=tuple(int(v) for v in c.get("color", (0, 0, 0))), supercategory=str(c.get("supercategory", "")),
                novel=bool(c.get("novel", 0)),
            ))
        except KeyError as err:
            raise PanopticDataError(f"{where}: a category lacks {err}: {c}") from None
    ids = [c.id for c in cats]
    if len(set(ids)) != len(ids):
        raise PanopticDataError(f"{where}: duplicate category ids")
    return sorted(cats, key=lambda c: c.id)


def resolve_class_subset(
    spec: str | Sequence[str], categories: Sequence[PanopticCategory], novel: Sequence[str] | None = None
) -> list[int]:
    """``"all" | "base" | "novel" | [names]`` -> sorted contiguous class indices."""
    names = [c.name for c in categories]
    novel_set = set(novel) if novel is not None else {c.name for c in categories if c.novel}
    unknown = novel_set - set(names)
    if unknown:
        raise PanopticDataError(f"novel classes {sorted(unknown)} are not categories of the dataset ({names})")
    if isinstance(spec, str):
        if spec == "all":
            return list(range(len(names)))
        if spec in ("base", "novel"):
            if not novel_set:
                raise PanopticDataError(
                    f"class subset {spec!r} needs novel classes: give `novel_classes: [names]` or a categories file "
                    "whose categories carry \"novel\": 1"
                )
            want = spec == "novel"
            return [i for i, n in enumerate(names) if (n in novel_set) == want]
        raise PanopticDataError(f"class subset must be 'all', 'base', 'novel' or a list of class names, got {spec!r}")
    missing = [n for n in spec if n not in names]
    if missing:
        raise PanopticDataError(f"class subset names {missing} are not categories of the dataset ({names})")
    return sorted(names.index(n) for n in spec)
