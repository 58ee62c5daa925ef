"""Panoptic quality (PQ / SQ / RQ) computed exactly as the official COCO panoptic evaluation, plus semantic mIoU.

The semantics follow ``cocodataset/panopticapi`` (``pq_compute``), which detectron2 and Mask2Former call:

* Segments come from id maps (a PNG's ``R + 256 G + 256^2 B``; id 0 = VOID) and the ``segments_info`` list of
  each image (``id``, ``category_id``, ``iscrowd`` for ground truth).
* A prediction matches a ground-truth segment of the SAME category that is not crowd when
  ``IoU > 0.5`` (strict), where ``union = |P| + |G| - |P∩G| - |P∩VOID_gt|``. Each match is a TP adding its IoU.
* FN: unmatched non-crowd ground-truth segments (a segment listed in the JSON but absent from the PNG counts too).
* FP: unmatched predictions, except those whose ``(|P∩VOID_gt| + |P∩crowd_c|) / |P| > 0.5``, where ``crowd_c`` is
  the crowd segment of the prediction's category (as in panopticapi: the LAST crowd segment of that category in
  ``segments_info`` order, one per category).
* Per class ``PQ = ΣIoU / (TP + FP/2 + FN/2)``, ``SQ = ΣIoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``; classes with
  ``TP + FP + FN = 0`` are left out of the averages; averages over All / Things / Stuff classes.

One deliberate difference: ground-truth areas are counted from the PNG, where panopticapi reads the JSON ``area``
field; on well-formed data (COCO, ADE20K converted by Mask2Former's script, the ShapesWorld writer) they agree.
Numbers are reported in percent (perfect = 100), as detectron2's evaluator reports them.

Semantic mIoU is derived from the same labels: every pixel takes its segment's category (crowd included), ground
truth VOID pixels are ignored, predicted VOID counts as a miss; mIoU averages the classes that occur in the ground
truth or the prediction.

Two front ends share one per-image kernel (:func:`panoptic_image_stats`):

* files: :func:`evaluate_panoptic_files` and ``python -m common.metrics.panoptic --gt-json J --gt-folder D
  --pred-json J --pred-folder D [--json] [--per-class]``;
* tensors: :class:`COCOPanopticQuality`, a DDP-safe ``torchmetrics.Metric`` (per-class sums as states) fed with
  per-image ``{"panoptic": (H, W) ids, "segments_info": [...]}`` predictions and targets whose ``category_id`` are
  contiguous class indices.

The code is split by concern: :mod:`~common.metrics.panoptic_format` (ids <-> colours, PNG/JSON files, format
checks), :mod:`~common.metrics.panoptic_stats` (per-image kernel, summary), :mod:`~common.metrics.panoptic_metric`
(the Metric); this module keeps every public name, the file front end and the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.metrics.panoptic_format import (
    OFFSET,
    VOID,
    PanopticFormatError,
    id2rgb,
    load_panoptic_json,
    load_panoptic_png,
    rgb2id,
)
from common.metrics.panoptic_stats import (
    PQStats,
    panoptic_image_stats,
    semantic_image_stats,
    summarize_panoptic,
)

__all__ = [
    "OFFSET",
    "VOID",
    "PanopticFormatError",
    "PQStats",
    "rgb2id",
    "id2rgb",
    "panoptic_image_stats",
    "semantic_image_stats",
    "summarize_panoptic",
    "evaluate_panoptic_files",
    "COCOPanopticQuality",  # noqa: F822 (defined lazily by __getattr__)
    "main",
]


# ----------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------
def evaluate_panoptic_files(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Official-equivalent PQ of a prediction set in COCO panoptic format against its ground truth.

    Folders default to the JSON path without ``.json`` (as panopticapi). Every ground-truth image needs a
    prediction (predictions for other images are ignored). Categories come from the ground-truth JSON.
    Returns :func:`summarize_panoptic`'s dict plus ``num_images``.
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder = Path(gt_folder) if gt_folder is not None else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder is not None else pred_json.with_suffix("")
    gt_data = load_panoptic_json(gt_json, "ground-truth")
    pred_data = load_panoptic_json(pred_json, "prediction")
    for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} PNG folder {folder} does not exist")
    categories = gt_data.get("categories")
    if not categories:
        raise PanopticFormatError(f"ground-truth JSON {gt_json} has no 'categories'")
    category_index = {int(c["id"]): i for i, c in enumerate(categories)}
    is_thing = [bool(c.get("isthing", 0)) for c in categories]
    names = [str(c.get("name", c["id"])) for c in categories]

    pred_by_image = {a["image_id"]: a for a in pred_data["annotations"]}
    k = len(categories)
    stats = PQStats(k)
    sem = [torch.zeros(k, dtype=torch.int64) for _ in range(3)]
    annotations = gt_data["annotations"]
    for gt_ann in _track(annotations, "PQ", progress):
        image_id = gt_ann["image_id"]
        if image_id not in pred_by_image:
            raise PanopticFormatError(f"{pred_json}: no prediction for the image with id {image_id!r}")
        pred_ann = pred_by_image[image_id]
        name = f"{image_id!r} ({gt_ann['file_name']})"
        gt_ids = torch.from_numpy(load_panoptic_png(gt_folder / gt_ann["file_name"]))
        pred_ids = torch.from_numpy(load_panoptic_png(pred_folder / pred_ann["file_name"]))
        gt_segs, pred_segs = gt_ann["segments_info"], pred_ann["segments_info"]
        stats += panoptic_image_stats(gt_ids, gt_segs, pred_ids, pred_segs, category_index, image=name)
        for acc, part in zip(sem, semantic_image_stats(gt_ids, gt_segs, pred_ids, pred_segs, category_index, image=name)):
            acc += part
    out = summarize_panoptic(stats, is_thing, names, [int(c["id"]) for c in categories], semantic=tuple(sem))
    out["num_images"] = len(annotations)
    return out


def _track(items: Sequence[Any], description: str, enabled: bool):
    if not enabled or len(items) < 2:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=len(items), console=Console(stderr=True), transient=True)


# ----------------------------------------------------------------------------------------------------------------
# tensors: a DDP-safe torchmetrics Metric (common.metrics.panoptic_metric)
# ----------------------------------------------------------------------------------------------------------------
def __getattr__(name: str) -> Any:
    """Lazy ``COCOPanopticQuality`` (PEP 562), so ``python -m common.metrics.panoptic`` does not import torchmetrics."""
    if name == "COCOPanopticQuality":
        from common.metrics.panoptic_metric import COCOPanopticQuality as cls

        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _nan_to_none(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def print_table(results: dict[str, Any], per_class: bool = False) -> None:
    """The panopticapi table (PQ SQ RQ N for All/Things/Stuff) with rich, plus mIoU and optionally per class."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Panoptic quality ({results.get('num_images', '?')} images)")
    for col in ("", "PQ", "SQ", "RQ", "N"):
        table.add_column(col, justify="left" if not col else "right")
    for group in ("All", "Things", "Stuff"):
        r = results[group]
        table.add_row(group, _fmt(r["pq"]), _fmt(r["sq"]), _fmt(r["rq"]), str(r["n"]))
    console.print(table)
    console.print(f"semantic mIoU (from panoptic labels): {_fmt(results['miou'])}")
    if per_class:
        t = Table(title="per class")
        for col in ("id", "name", "thing", "PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU"):
            t.add_column(col, justify="right" if col not in ("name",) else "left")
        for row in results["per_class"]:
            t.add_row(
                str(row["category_id"]), row["name"], "yes" if row["isthing"] else "no",
                _fmt(row["pq"]) if row["counted"] else "-", _fmt(row["sq"]) if row["counted"] else "-",
                _fmt(row["rq"]) if row["counted"] else "-", str(row["tp"]), str(row["fp"]), str(row["fn"]),
                _fmt(row.get("iou", float("nan"))),
            )
        console.print(t)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m common.metrics.panoptic --gt-json J --gt-folder D --pred-json J --pred-folder D [--json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m common.metrics.panoptic",
        description="Official-equivalent COCO panoptic quality (PQ/SQ/RQ) and semantic mIoU of a prediction set.",
    )
    parser.add_argument("--gt-json", required=True, help="ground-truth panoptic JSON (COCO format)")
    parser.add_argument("--gt-folder", default=None, help="ground-truth PNG folder (default: the JSON path without .json)")
    parser.add_argument("--pred-json", required=True, help="prediction panoptic JSON (COCO format)")
    parser.add_argument("--pred-folder", default=None, help="prediction PNG folder (default: the JSON path without .json)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (percent; null for NaN)")
    parser.add_argument("--per-class", action="store_true", help="also print the per-class table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        results = evaluate_panoptic_files(
            args.gt_json, args.pred_json, args.gt_folder, args.pred_folder,
            progress=not args.no_progress and not args.json,
        )
    except (FileNotFoundError, PanopticFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_jsonable(results), indent=2))
    else:
        print_table(results, per_class=args.per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
