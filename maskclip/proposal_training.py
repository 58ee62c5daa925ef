"""The tiny class-agnostic proposal network: trained on ShapesWorld COCO-panoptic, cached, measured.

``shapes-mask2former-tiny`` (:data:`maskclip.mask2former.TINY_NAME`) is the tiny :func:`~maskclip.mask2former.tiny_config`
Mask2Former trained like Mask2Former's stage 1 in MaskCLIP, class-agnostically:

* data: the ShapesWorld COCO-panoptic writer (:func:`common.data.synth.coco_panoptic.write_coco_panoptic`, seed 0,
  64 px; the same scenes as the default set's first images) read through
  :class:`common.data.coco_panoptic.COCOPanopticDataModule` with ``train_classes="base"``: the novel classes are VOID
  in training, as a COCO-trained proposal network never sees ADE20K's own classes; crowd segments dropped (as
  Mask2Former); large-scale jitter at a milder scale range for 64 px scenes;
* loss: Mask2Former's set criterion (:class:`maskclip.losses.MaskCLIPCriterion`: Hungarian matching on class 2.0,
  mask BCE 5.0, dice 5.0 over sampled points; importance-sampled points for the losses; every decoder layer
  supervised) with ONE class: every target is "object", and the class head learns object vs no-object (no-object
  weight 0.1, Mask2Former's default). This is the faithful class-agnostic Mask2Former; the head is not used by
  MaskCLIP, which reads the masks only;
* optimiser: AdamW (:func:`common.optim.adamw`, wd 0.05), linear warm-up + cosine (:func:`common.optim.warmup_cosine`),
  full-model gradient-norm clip.

The result is cached under ``outputs/pretrained/shapes-mask2former-tiny/{weights.pt,manifest.json}`` (sha256 in the
manifest, checked on load by :func:`common.models.cache.check_weights`); building holds the entry's file lock
(:func:`common.models.cache.entry_lock`), so DDP ranks train it once. ``$CVINW_PRETRAIN_BUDGET`` scales steps and
training images as for the other tiny backbones. The manifest records the proposal quality on the val split
(:func:`proposal_quality`) against a random initialisation and a single whole-image proposal.

Rebuild: ``python -m maskclip.proposal_training [--budget B] [--force]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import logging
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from common.data.coco_panoptic import COCOPanopticDataModule, COCOPanopticDataset, collate_panoptic
from common.models.cache import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    cache_dir,
    check_weights,
    default_budget,
    entry_lock,
    file_sha256,
    read_manifest,
)
from common.optim import adamw, warmup_cosine
from common.paths import data_dir
from maskclip.losses import MaskCLIPCriterion
from maskclip.mask2former import TINY_ARCH, TINY_NAME, ProposalNetwork, tiny_config

__all__ = ["RECIPE", "build_tiny", "class_agnostic_targets", "evaluate_tiny", "load_tiny", "proposal_data_root",
           "proposal_quality", "segment_best_iou", "train_tiny"]

log = logging.getLogger(__name__)

#: the recipe at budget 1.0 (steps and training images scale with the budget; the val split only below 0.5)
RECIPE: dict[str, Any] = {
    "steps": 1200,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_steps": 50,
    "grad_clip": 1.0,
    "num_train": 2000,
    "num_val": 200,
    "scale_range": [0.75, 1.5],
    "num_points": 256,
    "no_object_weight": 0.1,
    "seed": 0,
}

REBUILD = "python -m maskclip.proposal_training --force"


def val_images(budget: float, recipe: dict[str, Any] | None = None) -> int:
    """Val scenes measured: the recipe's 200 at budget >= 0.5, fewer (at least 40) at the small test budgets."""
    n = (recipe or RECIPE)["num_val"]
    return n if budget >= 0.5 else max(40, round(n * budget * 2))


def proposal_data_root(num_train: int, num_val: int) -> Path:
    """The ShapesWorld COCO-panoptic set the proposals train on (written once, locked): ``outputs/data/
    coco_panoptic-proposals-<num_train>-<num_val>/`` (seed 0, 64 px: image i of a split is the same scene as in
    every other set written with seed 0)."""
    from common.data.synth import write_once
    from common.data.synth.coco_panoptic import write_coco_panoptic

    root = data_dir() / f"coco_panoptic-proposals-{num_train}-{num_val}"
    write_once(root, write_coco_panoptic, num_train=num_train, num_val=num_val, size=TINY_ARCH["image_size"],
               seed=0, progress=False)
    return root


def _datamodule(root: Path, scale_range: tuple[float, float]) -> COCOPanopticDataModule:
    size = TINY_ARCH["image_size"]
    return COCOPanopticDataModule(str(root), train_classes="base", eval_classes="all", crop_size=size,
                                  scale_range=scale_range, eval_short_side=size, synth_if_missing=False)


def _cycle(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def class_agnostic_targets(batch_targets: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
    """Panoptic targets -> one-class targets: every non-crowd segment is "object" (label 0)."""
    out = []
    for t in batch_targets:
        keep = ~t["iscrowd"]
        masks = t["masks"].as_subclass(Tensor)[keep].float()
        out.append({"labels": torch.zeros(masks.shape[0], dtype=torch.long), "masks": masks})
    return out


def train_tiny(budget: float = 1.0, *, recipe: dict[str, Any] | None = None, progress: bool = True
               ) -> tuple[ProposalNetwork, dict[str, Any]]:
    """Train the tiny proposal network on ShapesWorld COCO-panoptic; returns it (train mode) and training stats."""
    r = {**RECIPE, **(recipe or {})}
    steps = max(1, round(r["steps"] * budget))
    num_train = max(r["batch_size"], round(r["num_train"] * min(budget, 1.0)))
    root = proposal_data_root(num_train, val_images(budget, r))
    dm = _datamodule(root, tuple(r["scale_range"]))
    train_set = dm.make_dataset("train2017", train=True)
    torch.manual_seed(r["seed"])
    gen = torch.Generator().manual_seed(r["seed"])
    loader = DataLoader(train_set, batch_size=r["batch_size"], shuffle=True, drop_last=True, generator=gen,
                        collate_fn=functools.partial(collate_panoptic, size_divisibility=0))
    net = ProposalNetwork(tiny_config()).train()
    criterion = MaskCLIPCriterion(no_object_weight=r["no_object_weight"], num_points=r["num_points"])
    criterion.generator = torch.Generator().manual_seed(r["seed"] + 1)
    opt = adamw(net, lr=r["lr"], weight_decay=r["weight_decay"])
    sched = warmup_cosine(opt, steps, min(r["warmup_steps"], steps // 5))
    bar = None
    if progress:
        from common.models.pretrain import progress_bar

        bar = progress_bar()
        bar.start()
        task = bar.add_task(TINY_NAME, total=steps, info="")
    t0, losses = time.perf_counter(), []
    batches = _cycle(loader)
    try:
        for _ in range(steps):
            batch = next(batches)
            out = net.predict(net.normalize(batch["images"]))
            loss = criterion(out, class_agnostic_targets(batch["targets"]))
            opt.zero_grad(set_to_none=True)
            loss["loss"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), r["grad_clip"])
            opt.step()
            sched.step()
            final = {k: float(v.detach()) for k, v in loss.items() if "_" not in k.removeprefix("loss_") or k == "loss"}
            losses.append(final)
            if bar is not None:
                bar.update(task, advance=1, info=f"loss {final['loss']:.2f}")
    finally:
        if bar is not None:
            bar.stop()
    last = losses[-min(20, len(losses)):]
    stats = {"steps": steps, "num_train": num_train, "data_root": str(root),
             "final_losses": {k: round(sum(d[k] for d in last) / len(last), 4) for k in last[0]},
             "first_loss": round(losses[0]["loss"], 4), "train_s": round(time.perf_counter() - t0, 1)}
    return net, stats


@torch.no_grad()
def segment_best_iou(proposals: Tensor, gt: Tensor) -> Tensor:
    """``(Q, H, W)`` bool proposals, ``(T, H, W)`` bool segments -> ``(T,)`` best IoU of each segment."""
    p, g = proposals.flatten(1).float(), gt.flatten(1).float()
    inter = g @ p.t()
    union = g.sum(1, keepdim=True) + p.sum(1)[None] - inter
    return (inter / union.clamp_min(1)).amax(1) if p.shape[0] else torch.zeros(g.shape[0])


@torch.no_grad()
def proposal_quality(net: ProposalNetwork | None, dataset: COCOPanopticDataset, *, novel: set[int],
                     batch_size: int = 32) -> dict[str, Any]:
    """Proposal quality on an evaluation split: for each ground-truth segment (crowd ones left out) the best IoU of
    any proposal (``sigmoid >= 0.5`` upsampled to the image), averaged (``mean_best_iou``), and the share with a
    proposal at IoU >= 0.5 (``recall50``), over all segments, things, stuff, novel-class and base-class ones.

    ``net=None`` is the trivial baseline: one whole-image proposal.
    """
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=functools.partial(collate_panoptic,
                                                                                       size_divisibility=0))
    best, thing, is_novel = [], [], []
    if net is not None:
        net.eval()
    for batch in loader:
        images = batch["images"]
        if net is not None:
            logits = net(net.normalize(images))
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
            props = logits.sigmoid() >= 0.5
        else:
            props = torch.ones(images.shape[0], 1, *images.shape[-2:], dtype=torch.bool)
        for i, t in enumerate(batch["targets"]):
            h, w = batch["image_sizes"][i]
            keep = ~t["iscrowd"]
            gt = t["masks"].as_subclass(Tensor)[keep][:, :h, :w]
            labels = t["labels"][keep]
            best.append(segment_best_iou(props[i, :, :h, :w], gt))
            by_id = {s["category_id"]: s["isthing"] for s in t["segments_info"]}
            thing.append(torch.tensor([bool(by_id[int(k)]) for k in labels], dtype=torch.bool))
            is_novel.append(torch.tensor([int(k) in novel for k in labels], dtype=torch.bool))
    b, th, nv = torch.cat(best), torch.cat(thing), torch.cat(is_novel)
    groups = {"all": torch.ones_like(th), "things": th, "stuff": ~th, "novel": nv, "base": ~nv}
    return {g: {"segments": int(m.sum()), "mean_best_iou": round(float(b[m].mean()) * 100, 2) if m.any() else None,
                "recall50": round(float((b[m] >= 0.5).float().mean()) * 100, 2) if m.any() else None}
            for g, m in groups.items()}


def evaluate_tiny(net: ProposalNetwork, data_root: Path, seed: int = 0) -> dict[str, Any]:
    """The trained network, a random initialisation of the same config, and one whole-image proposal, on the val
    split of the proposal set (all classes, novel ones included)."""
    dm = _datamodule(data_root, tuple(RECIPE["scale_range"]))
    val = dm.make_dataset("val2017", train=False)
    novel = set(dm.info["novel_classes"])
    torch.manual_seed(seed)
    random_net = ProposalNetwork(tiny_config())
    return {"val_images": len(val), "trained": proposal_quality(net, val, novel=novel),
            "random_init": proposal_quality(random_net, val, novel=novel),
            "whole_image": proposal_quality(None, val, novel=novel)}


def build_tiny(budget: float = 1.0, root: Path | None = None, *, recipe: dict[str, Any] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Train, measure and write the cache entry ``<root>/shapes-mask2former-tiny/`` (not locked: use
    :func:`load_tiny`); returns the manifest."""
    if budget <= 0:
        raise ValueError(f"proposal pretraining budget must be positive, got {budget}")
    t0, c0 = time.perf_counter(), time.process_time()
    net, stats = train_tiny(budget, recipe=recipe, progress=progress)
    t1 = time.perf_counter()
    metrics = evaluate_tiny(net, Path(stats["data_root"]))
    t_eval = time.perf_counter() - t1
    d = cache_dir(TINY_NAME, root)
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST_FILE).unlink(missing_ok=True)  # the entry is invalid until both files are written
    tmp = d / (WEIGHTS_FILE + f".tmp{os.getpid()}")
    torch.save({k: v.detach().clone() for k, v in net.m2f.state_dict().items()}, tmp)
    os.replace(tmp, d / WEIGHTS_FILE)
    import transformers

    manifest = {
        "name": TINY_NAME,
        "kind": "transformers-mask2former",
        "description": "class-agnostic Mask2Former proposal network (maskclip/mask2former.py tiny_config), trained on "
                       "ShapesWorld COCO-panoptic base classes with one object class + no-object",
        "arch": json.loads(json.dumps(TINY_ARCH)),
        "input": {"image_size": TINY_ARCH["image_size"], "mean": list(net.mean), "std": list(net.std)},
        "recipe": {**RECIPE, **(recipe or {})},
        "budget": budget,
        "train": stats,
        "metrics": metrics,
        "time_s": {"train": stats["train_s"], "eval": round(t_eval, 2), "total": round(time.perf_counter() - t0, 2),
                   "cpu_total": round(time.process_time() - c0, 2)},
        "weights": {"file": WEIGHTS_FILE, "sha256": file_sha256(d / WEIGHTS_FILE)},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "torch_threads": torch.get_num_threads(),
    }
    tmp = d / (MANIFEST_FILE + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, d / MANIFEST_FILE)
    return manifest


def _valid(root: Path | None) -> bool:
    manifest = read_manifest(TINY_NAME, root)
    if manifest is None:
        return False
    if manifest.get("arch") != json.loads(json.dumps(TINY_ARCH)) or manifest.get("recipe") != RECIPE:
        log.warning("cached %s was built for another architecture or recipe; it will be rebuilt", TINY_NAME)
        return False
    return True


def _load(root: Path | None) -> ProposalNetwork:
    wf = check_weights(TINY_NAME, root, rebuild=REBUILD)
    net = ProposalNetwork(tiny_config())
    net.m2f.load_state_dict(torch.load(wf, map_location="cpu", weights_only=True))
    return net


def load_tiny(*, budget: float | None = None, root: Path | None = None, force: bool = False) -> ProposalNetwork:
    """The cached tiny proposal network (train mode, trainable: :func:`maskclip.proposals.load_proposal_network`
    freezes it), trained first when the cache has none (or one of another architecture), under the entry's lock."""
    if not force and _valid(root):
        return _load(root)
    with entry_lock(TINY_NAME, root):
        if force or not _valid(root):  # another process may have built it while we waited
            log.warning("%s not in %s: training it on ShapesWorld COCO-panoptic now (once)", TINY_NAME,
                        cache_dir(TINY_NAME, root))
            build_tiny(default_budget() if budget is None else budget, root)
    return _load(root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maskclip.proposal_training", description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=None, help="multiple of the recipe (default $CVINW_PRETRAIN_BUDGET or 1)")
    p.add_argument("--force", action="store_true", help="retrain even if the cache is valid")
    args = p.parse_args(argv)
    load_tiny(budget=args.budget, force=args.force)
    manifest = read_manifest(TINY_NAME)
    print(json.dumps({k: manifest[k] for k in ("metrics", "time_s", "train")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
