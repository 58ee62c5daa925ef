"""``python -m vificlip classify VIDEO... --classes "archery,juggling balls,..." [--ckpt PATH]``: zero-shot
classification of a user's videos into any class list, with a ViFi-CLIP checkpoint or a plain CLIP.

Each video is decoded (decord or PyAV), sampled and cropped as the evaluation of the datamodules does (TSN segment
centres, ``--clips`` temporal clips x ``--crops`` spatial crops, softmax averaged over the views), and the top-5
classes are printed with their probabilities. A missing or undecodable video is an error line for that file; the
others still print (exit status 1 if any failed).

Without ``--ckpt`` the model is vanilla CLIP (``--arch``, ``--pretrained``: an open_clip tag such as ``openai``,
which open_clip downloads, or a local checkpoint file) with bare class names; with ``--ckpt`` (a ``.ckpt`` written by
``python -m vificlip fit``) the checkpoint's method, architecture, prompts and weights, and its prompt template.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["load_classifier", "video_views", "classify", "main"]


def _parse_classes(text: str) -> list[str]:
    path = Path(text)
    if path.is_file():  # one class per line, or an id,name CSV
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if lines and lines[0].lower().replace(" ", "") == "id,name":
            lines = [ln.split(",", 1)[1].strip() for ln in lines[1:]]
        return lines
    return [c.strip() for c in text.split(",") if c.strip()]


def load_classifier(classes: Sequence[str], ckpt: str | None = None, arch: str = "ViT-B-16",
                    pretrained: str | None = "openai"):
    """A :class:`vificlip.module.ViFiCLIPModule` in eval mode over ``classes``: from a checkpoint of this package
    (its weights, method and prompts), or vanilla zero-shot CLIP."""
    from vificlip.module import ViFiCLIPModule

    info = {"num_classes": len(classes), "class_names": list(classes)}
    if ckpt is None:
        module = ViFiCLIPModule(method="zero_shot", arch=arch, pretrained=pretrained, data_info=info)
        return module.eval()
    from common.checkpoints import check_checkpoint

    check_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = {k: v for k, v in dict(state.get("hyper_parameters") or {}).items()
          if not k.startswith("_") and k not in ("data_info", "num_classes")}
    hp.update(pretrained=None, init_from=None)  # the weights come from the checkpoint
    module = ViFiCLIPModule(**hp, data_info=info)
    weights = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    module.model.load_state_dict(weights, strict=True)
    return module.eval()


def video_views(path: str, num_frames: int, size: int, clips: int = 1, crops: int = 1, backend: str = "decord",
                normalize: str = "clip") -> torch.Tensor:
    """``(V, T, 3, S, S)`` evaluation views of one video (crop-major, as the video datamodules)."""
    from common.data.sampling import build_sampler
    from common.data.video import read_clip
    from common.data.video_transforms import VideoTransform

    if not Path(path).is_file():
        raise FileNotFoundError("no such file")
    sampler = build_sampler("segment", num_frames, segment_style="tsn")
    transform = VideoTransform.preset("multiscale_crop", size, normalize=normalize)
    frames, idx = read_clip(path, lambda n: sampler.test_indices(n, clips), backend)
    views = transform.eval_views(frames, crops)  # (crops, clips*T, 3, S, S)
    return views.reshape(crops * clips, idx.shape[-1], *views.shape[2:])


@torch.no_grad()
def classify(module, videos: Sequence[str], *, num_frames: int = 8, size: int | None = None, clips: int = 1,
             crops: int = 1, backend: str = "decord", normalize: str | None = None, top_k: int = 5,
             out=None, err=None) -> int:
    """Print the top-k classes per video (to ``out``, errors to ``err``; default stdout / stderr); returns the
    number of videos that failed."""
    out, err = out or sys.stdout, err or sys.stderr
    from common.data.video import VideoDecodeError

    visual = module.model.clip.visual
    size = size or int(visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size)
    if normalize is None:  # the official ViFi-CLIP loader uses ImageNet statistics; the tiny CLIP its own
        normalize = "clip" if module.hparams.arch == "shapes-clip-tiny" else "imagenet"
    names = module.model.class_names
    failed = 0
    for path in videos:
        try:
            views = video_views(path, num_frames, size, clips, crops, backend, normalize)
        except (FileNotFoundError, VideoDecodeError, OSError, RuntimeError) as e:
            print(f"{path}: error: {e}", file=err)
            failed += 1
            continue
        probs = module.view_probabilities(views.unsqueeze(0))[0]
        p, i = probs.topk(min(top_k, len(names)))
        print(path, file=out)
        for rank, (pk, ik) in enumerate(zip(p.tolist(), i.tolist()), 1):
            print(f"  {rank}. {names[ik]:<40} {pk:.4f}", file=out)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vificlip classify", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="video files")
    parser.add_argument("--classes", required=True, help="comma-separated class names, or a file (one per line, "
                        "or an id,name CSV)")
    parser.add_argument("--ckpt", default=None, help="a checkpoint of python -m vificlip fit (default: vanilla CLIP)")
    parser.add_argument("--arch", default="ViT-B-16", help="CLIP architecture without --ckpt (default ViT-B-16)")
    parser.add_argument("--pretrained", default="openai", help="open_clip tag or local CLIP checkpoint without "
                        "--ckpt (default openai: downloaded by open_clip unless cached)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (TSN segment centres)")
    parser.add_argument("--size", type=int, default=None, help="crop size (default: the model's input size)")
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--crops", type=int, default=1, choices=(1, 3))
    parser.add_argument("--backend", default="decord", choices=("decord", "pyav", "torchcodec"))
    parser.add_argument("--normalize", default=None, choices=("clip", "imagenet"),
                        help="pixel statistics (default: imagenet, as the official loader; clip for the tiny CLIP)")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    classes = _parse_classes(args.classes)
    if not classes:
        parser.error("--classes names no class")
    module = load_classifier(classes, args.ckpt, args.arch, args.pretrained)
    failed = classify(module, args.videos, num_frames=args.frames, size=args.size, clips=args.clips,
                      crops=args.crops, backend=args.backend, normalize=args.normalize, top_k=args.top)
    return 1 if failed else 0
