"""ST-Adapter (NeurIPS 2022): trainable parameters at paper scale, open_clip ViT-B/16 and ViT-L/14 built on the meta
device (``pretrained=None``: nothing downloaded, nothing allocated), K400 head 400 classes, SSv2 head 174.

The paper counts "7M" (K400, 12x384) and "14M" (SSv2, 24x384) tunable parameters for ViT-B/16 [3rd-party quotes;
st_adapter/README.md]. One adapter at D=768, r=384 has 592,512 parameters [derived]. ViT-L/14 has 24 blocks: the
K400 placement (before every MLP) gives 24 adapters (D=1024, r=384), the SSv2 placement 48; the paper's ViT-L/14
parameter figure is not confirmed here, so those rows carry no paper value.
"""

from __future__ import annotations

from benchmarks.param_budgets import BudgetRow
from st_adapter.model import build_video_vit

TITLE = ("ST-Adapter table, trainable parameters at paper scale: open_clip ViT-B/16 and ViT-L/14 (meta device), "
         "K400 head 400 classes, SSv2 head 174")

K400, SSV2 = 400, 174
PRE_MLP = ("pre_mlp",)
BOTH = ("pre_attn", "pre_mlp")


def count(arch: str, method: str, positions: tuple[str, ...] = PRE_MLP, num_classes: int = K400,
          width: int = 384) -> dict[str, int]:
    """Trainable parameters (adapters / head / backbone) of one configuration, built on the meta device."""
    model = build_video_vit(arch, None, num_classes, method, adapter_width=width, adapter_positions=positions,
                            device="meta")
    return model.parameter_counts()


def budget_rows() -> list[BudgetRow]:
    rows: list[BudgetRow] = []
    b12 = count("ViT-B-16", "st_adapter", PRE_MLP, K400)
    b24 = count("ViT-B-16", "st_adapter", BOTH, SSV2)
    rows += [
        BudgetRow("B/16 12x384 adapters", b12["adapters"], 7.0, "K400 placement: before the MLP, 12 blocks"),
        BudgetRow("B/16 12x384 + K400 head", b12["adapters"] + b12["head"], 7.0,
                  "head Linear(768, 400) = 0.31M; the paper rounds to 7M"),
        BudgetRow("B/16 24x384 adapters", b24["adapters"], 14.0, "SSv2 placement: before attention and the MLP"),
        BudgetRow("B/16 24x384 + SSv2 head", b24["adapters"] + b24["head"], 14.0, "head Linear(768, 174) = 0.13M"),
    ]
    l24 = count("ViT-L-14", "st_adapter", PRE_MLP, K400)
    l48 = count("ViT-L-14", "st_adapter", BOTH, SSV2)
    rows += [
        BudgetRow("L/14 24x384 + K400 head", l24["adapters"] + l24["head"], None,
                  f"24 pre-MLP adapters D=1024 ({l24['adapters'] / 1e6:.2f}M) + head 0.41M"),
        BudgetRow("L/14 48x384 + SSv2 head", l48["adapters"] + l48["head"], None,
                  f"48 adapters ({l48['adapters'] / 1e6:.2f}M) + head 0.18M"),
    ]
    for arch, label in (("ViT-B-16", "B/16"), ("ViT-L-14", "L/14")):
        probe = count(arch, "linear_probe")
        full = count(arch, "full_finetune")
        rows += [
            BudgetRow(f"{label} linear probe (K400)", probe["head"], None, "frozen backbone, frame-mean head"),
            BudgetRow(f"{label} full fine-tuning (K400)", full["backbone"] + full["head"], None,
                      "whole vision tower + head (CLIP projection unused)"),
        ]
    return rows
