"""Class-agnostic mask proposals for MaskCLIP: :func:`load_proposal_network`.

MaskCLIP's first stage [official code] is a Mask2Former (R50, 100 queries) trained on COCO panoptic with its class
head removed: it proposes masks, CLIP names them. The network and the detectron2 converter are in
:mod:`maskclip.mask2former` (re-exported here); the cached tiny ShapesWorld network is trained by
:mod:`maskclip.proposal_training`. ``ProposalNetwork.forward(images)`` takes ``(B, 3, H, W)`` images normalised
with its ``mean`` / ``std`` and returns ``(B, Q, H/4, W/4)`` mask logits.
"""

from __future__ import annotations

import re
from pathlib import Path

from maskclip.mask2former import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_ARCH,
    TINY_NAME,
    ProposalCheckpointError,
    ProposalNetwork,
    config_from_detectron2,
    convert_detectron2_mask2former,
    detectron2_key_map,
    load_checkpoint_file,
    r50_config,
    tiny_config,
    to_detectron2,
)
from maskclip.proposal_training import load_tiny

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TINY_ARCH",
    "TINY_NAME",
    "ProposalCheckpointError",
    "ProposalNetwork",
    "config_from_detectron2",
    "convert_detectron2_mask2former",
    "detectron2_key_map",
    "load_checkpoint_file",
    "load_proposal_network",
    "r50_config",
    "tiny_config",
    "to_detectron2",
]


def _freeze(net: ProposalNetwork) -> ProposalNetwork:
    net.requires_grad_(False)
    return net.eval()


def load_proposal_network(spec: str | Path | None) -> ProposalNetwork:
    """A frozen proposal network in eval mode.

    Args:
        spec: ``"shapes-mask2former-tiny"`` (the cached tiny network, trained on ShapesWorld COCO-panoptic on first
            use, locked so DDP ranks train it once), a local checkpoint path (:func:`load_checkpoint_file`: a
            ``transformers`` state dict or the official detectron2 one, converted), or ``None`` (a random
            initialisation of the tiny configuration, for tests).
    """
    if spec is None:
        return _freeze(ProposalNetwork(tiny_config()))
    if isinstance(spec, str) and spec == TINY_NAME:
        return _freeze(load_tiny())
    path = Path(spec).expanduser()
    if isinstance(spec, str) and not path.exists() and re.fullmatch(r"[\w-]+", spec):
        raise ValueError(f"unknown proposal network {spec!r}: give \"{TINY_NAME}\", a checkpoint path, or None")
    return _freeze(load_checkpoint_file(path))
