"""``python -m maskclip segment IMAGE... --classes "cat,grass,sky" [--stuff "grass,sky"] [--ckpt PATH] [--out DIR]``:
open-vocabulary panoptic segmentation of a user's images into any class list.

Per image, into ``--out`` (default ``outputs/maskclip/segment``): ``<name>_panoptic.png`` (COCO panoptic format:
segment id = R + 256 G + 256^2 B, 0 = unlabelled), ``<name>_segments.json`` (``segments_info`` with ``id``,
``category_id`` (index into the class list), ``category_name``, ``isthing``, ``area``, ``bbox``, and the class list)
and ``<name>_overlay.png`` (the image beside the coloured, named segments). Inputs are files, folders or quoted
globs (:func:`common.data.predict.expand_inputs`); an input that names nothing or a file that is not a readable
image is an error line naming it, the others are still segmented (exit status 1 if any failed).

The model: with ``--ckpt`` (a ``.ckpt`` of ``python -m maskclip fit``) the checkpoint's method, CLIP, proposals and
RMA weights; without it ``--method`` (default ``no_rma``: mask class tokens, nothing trained) on ``--clip-arch`` /
``--clip-pretrained`` / ``--proposals`` (default the tiny ShapesWorld ones; paper scale: ``--clip-arch
ViT-L-14-336 --clip-pretrained openai --proposals r50_proposals.pth``). Classes in ``--stuff`` are amorphous regions
(one segment per class); the others are things (one segment per instance).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

__all__ = ["load_segmenter", "main", "segment_files"]


def _split(text: str | None) -> list[str]:
    if not text:
        return []
    path = Path(text)
    if path.is_file():  # one class per line
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [c.strip() for c in text.split(",") if c.strip()]


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def class_info(classes: Sequence[str], stuff: Sequence[str] = ()) -> dict[str, Any]:
    """``data_info`` for a user's class list (every class evaluated, ``stuff`` ones not things)."""
    unknown = sorted(set(stuff) - set(classes))
    if unknown:
        raise ValueError(f"--stuff names {unknown} that are not in --classes {list(classes)}")
    return {"task": "panoptic", "num_classes": len(classes), "class_names": list(classes),
            "is_thing": [c not in set(stuff) for c in classes], "train_classes": list(range(len(classes))),
            "eval_classes": list(range(len(classes))), "novel_classes": []}


def load_segmenter(classes: Sequence[str], stuff: Sequence[str] = (), ckpt: str | None = None, *,
                   method: str = "no_rma", clip_arch: str = "shapes-clip-tiny",
                   clip_pretrained: str | None = "shapes-clip-tiny",
                   proposals: str | None = "shapes-mask2former-tiny", object_threshold: float | None = None,
                   overlap_threshold: float | None = None) -> Any:
    """A :class:`maskclip.module.MaskCLIPModule` in eval mode over ``classes``: from a checkpoint of this package
    (its hyper-parameters and weights) or built from the arguments."""
    from maskclip.module import MaskCLIPModule

    info = class_info(classes, stuff)
    extra = {k: v for k, v in (("object_threshold", object_threshold), ("overlap_threshold", overlap_threshold))
             if v is not None}
    if ckpt is None:
        return MaskCLIPModule(info, method=method, clip_arch=clip_arch, clip_pretrained=clip_pretrained,  # type: ignore[arg-type]
                              proposals=proposals, **extra).eval()
    from common.checkpoints import check_checkpoint

    check_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = {k: v for k, v in dict(state.get("hyper_parameters") or {}).items()
          if not k.startswith("_") and k not in ("data_info", "class_names")}
    module = MaskCLIPModule(info, **{**hp, **extra})
    module.on_load_checkpoint(state)  # completes a checkpoint without the frozen weights
    module.load_state_dict(state["state_dict"], strict=True)
    return module.eval()


def read_image(path: Path) -> np.ndarray:
    """An image file -> ``(H, W, 3)`` uint8 RGB; ``ValueError`` naming the file when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty (0 bytes)")
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__}: {err})") from err


def _resize_short(image: np.ndarray, short_side: int | None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
    if short_side:
        h, w = image.shape[:2]
        s = short_side / min(h, w)
        x = torch.nn.functional.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x


@torch.no_grad()
def segment_files(module: Any, inputs: Sequence[str], out_dir: Path, *, short_side: int | None = None,
                  out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Segment every image of ``inputs`` into ``out_dir``; print one line per image (errors to ``err``); returns
    the number of inputs that failed."""
    from common.data.predict import IMAGE_SUFFIXES, expand_inputs, unique_names
    from maskclip.visualize import write_panoptic_files

    out, err = out or sys.stdout, err or sys.stderr
    files, missing = expand_inputs(list(inputs), IMAGE_SUFFIXES)
    failed = 0
    for entry, why in missing:
        print(f"{entry}: error: {why}", file=err)
        failed += 1
    names = module.hparams.get("class_names") or module.data_info["class_names"]
    for path, name in zip(files, unique_names(files)):
        try:
            image = read_image(path)
        except ValueError as e:
            print(f"{path}: error: {e}", file=err)
            failed += 1
            continue
        x = _resize_short(image, short_side).to(module.device)
        pred = module.predict_panoptic(x, [tuple(x.shape[-2:])], [image.shape[:2]])[0]
        row = write_panoptic_files(out_dir, name, image, pred["panoptic"], pred["segments_info"], names, str(path))
        found = sorted({names[s["category_id"]] for s in pred["segments_info"]})
        print(f"{path}: {row['num_segments']} segments ({', '.join(found) or 'none'}) -> "
              f"{out_dir / row['panoptic']}, {row['segments']}, {row['overlay']}", file=out)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    from common.paths import outputs_dir

    parser = argparse.ArgumentParser(prog="python -m maskclip segment", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files, folders or quoted globs")
    parser.add_argument("--classes", required=True, help="comma-separated class names, or a file (one per line)")
    parser.add_argument("--stuff", default="", help="the classes (of --classes) that are stuff: one segment per class")
    parser.add_argument("--ckpt", default=None, help="a checkpoint of python -m maskclip fit")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/maskclip/segment)")
    parser.add_argument("--method", default="no_rma", choices=("no_rma", "crop_classify", "maskclip"),
                        help="without --ckpt: the method (default no_rma: mask class tokens, nothing trained)")
    parser.add_argument("--clip-arch", default="shapes-clip-tiny", help="without --ckpt: the CLIP architecture")
    parser.add_argument("--clip-pretrained", default="shapes-clip-tiny",
                        help="without --ckpt: open_clip tag or local CLIP checkpoint (none: random weights)")
    parser.add_argument("--proposals", default="shapes-mask2former-tiny",
                        help="without --ckpt: the proposal network (shapes-mask2former-tiny or a checkpoint file; "
                        "none: a random tiny network, a pipeline check)")
    parser.add_argument("--object-threshold", type=float, default=None,
                        help="keep proposals whose top class scores above this (default: the checkpoint's, else 0.5; "
                        "the official ADE20K setting is 0.3)")
    parser.add_argument("--overlap-threshold", type=float, default=None,
                        help="keep a segment whose visible part is at least this share of its mask (default: the "
                        "checkpoint's, else 0.5)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="resize each image's shorter side to this before segmenting (default: as it is)")
    args = parser.parse_args(argv)
    classes = _split(args.classes)
    if not classes:
        parser.error("--classes names no class")
    try:
        module = load_segmenter(classes, _split(args.stuff), args.ckpt, method=args.method,
                                clip_arch=args.clip_arch, clip_pretrained=_none(args.clip_pretrained),
                                proposals=_none(args.proposals), object_threshold=args.object_threshold,
                                overlap_threshold=args.overlap_threshold)
    except ValueError as e:
        parser.error(str(e))
    out_dir = args.out or outputs_dir() / "maskclip" / "segment"
    failed = segment_files(module, args.images, out_dir, short_side=args.short_side)
    return 1 if failed else 0
