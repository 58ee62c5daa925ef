"""MaskCLIP (ICML 2023): trainable parameters at paper scale, open_clip ViT-L/14@336 built on the meta device
(``pretrained=None``: nothing downloaded, nothing allocated).

Only the Relative Mask Attention trains, in blocks 6, 12, 18 and 24: per block a mask-embedding convolution
``Conv2d(1, 1024, 14, 14)`` (200,704 + 1,024), its LayerNorm (2,048), the key projection ``Linear(1024, 1024)``
(1,049,600) and the refinement convolution ``Conv2d(1024, 196, 1)`` (200,704 + 196): 1,454,276, x 4 = 5,817,104. The
paper reports ~5.82M; the per-block figure is derived from the official code's modules (``*_added_params``). The
frozen CLIP (427.9M, both towers) and the frozen Mask2Former proposal network do not train. Ours equals the paper's.
"""

from __future__ import annotations

from benchmarks.param_budgets import BudgetRow
from common.models import load_clip
from maskclip.mask_tokens import MaskCLIP

TITLE = ("MaskCLIP, trainable parameters at paper scale: open_clip ViT-L/14@336 (meta device), COCO's 133 classes; "
         "the paper column is the paper's ~5.82M (4 RMA blocks x 1,454,276 by the official modules)")

CLASSES = tuple(f"class {i}" for i in range(133))


def count(rma: bool = True) -> dict[str, int]:
    clip, tokenizer, _ = load_clip("ViT-L-14-336", None, device="meta")
    model = MaskCLIP(clip, tokenizer, CLASSES, rma=rma)
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params)}


def budget_rows() -> list[BudgetRow]:
    full, plain = count(True), count(False)
    return [
        BudgetRow("MaskCLIP (mask tokens + RMA)", full["trainable"], 5.82,
                  f"4 RMA blocks (6/12/18/24); frozen: CLIP {full['total'] - full['trainable']:,}"),
        BudgetRow("mask class tokens only", plain["trainable"], None, "no RMA: nothing trains"),
    ]
