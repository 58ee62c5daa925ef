"""Conv-Adapter (CVPRW 2024): trainable parameters at paper scale, timm backbones built on the meta device (nothing
downloaded, nothing allocated), a 100-class head.

The one parameter figure of the paper we carry is the abstract's: Conv-Adapter trains "only 3.5% of the full
fine-tuning parameters of ResNet50" [paper]. The official code's default compression factor is ``adapt_size`` (gamma)
8 [code]; at gamma 8 the ResNet-50 adapters are 0.85% of the backbone, at gamma 2 2.9%, at gamma 1 5.5% [derived
here]. The headline 3.5% is met by gamma 2 once the 100-class head and the extra BatchNorm are counted (3.7%), or by
gamma 2 with a head of about 74 classes (3.5%); gamma 1 is above it with any head. So the paper's ResNet-50 number
reads as gamma = 2 with the trainable head and norm counted; the per-backbone gamma of the paper's other tables is
not confirmed here [?], so those rows carry no paper value (conv_adapter/README.md).
"""

from __future__ import annotations

from benchmarks.param_budgets import BudgetRow
from conv_adapter.model import VARIANTS, build

TITLE = ("Conv-Adapter, trainable parameters at paper scale: timm ResNet-50 / ResNet-18 / BiT ResNetV2-50x1 / "
         "ConvNeXt-B / Swin-B / Swin-L (meta device), 100-class head, gamma 8 unless the row says")

NUM_CLASSES = 100
BACKBONES = (("R50", "resnet50"), ("R18", "resnet18"), ("BiT-R50x1", "resnetv2_50x1_bit"),
             ("ConvNeXt-B", "convnext_base"), ("Swin-B", "swin_base_patch4_window7_224"),
             ("Swin-L", "swin_large_patch4_window7_224"))
HEADLINE = 0.035  # of ResNet-50's full fine-tuning parameters [paper abstract]


def count(backbone: str, method: str, gamma: int = 8) -> dict[str, int]:
    return build(backbone, method, num_classes=NUM_CLASSES, gamma=gamma, device="meta").parameter_counts()


def budget_rows() -> list[BudgetRow]:
    rows: list[BudgetRow] = []
    full50 = count("resnet50", "full_finetune")["total"]
    for gamma in (1, 2, 4, 8):
        c = count("resnet50", "conv_parallel", gamma)
        rows.append(BudgetRow(f"R50 conv-par g={gamma} adapters", c["adapters"], None,
                              f"{c['adapters'] / full50:.2%} of full FT ({full50 / 1e6:.2f}M)"))
        paper = HEADLINE * full50 / 1e6 if gamma == 2 else None
        rows.append(BudgetRow(f"R50 conv-par g={gamma} all trained", c["total"], paper,
                              f"{c['total'] / full50:.2%} of full FT; + head {c['head'] / 1e6:.2f}M + extra BN"
                              + ("; paper: 3.5% of full FT" if paper else "")))
    for label, name in BACKBONES:
        full = count(name, "full_finetune")["total"]
        for method in VARIANTS:
            c = count(name, method)
            rows.append(BudgetRow(f"{label} {method}", c["total"], None,
                                  f"adapters {c['adapters'] / 1e6:.3f}M + norms {c['backbone'] / 1e6:.3f}M + head; "
                                  f"{c['total'] / full:.2%} of full FT"))
        baselines = ["linear_probe", "bitfit", "full_finetune"] + (["vpt"] if label.startswith("Swin") else [])
        for method in baselines:
            c = count(name, method)
            note = {"linear_probe": "head + top norm", "bitfit": "every backbone bias + head + top norm",
                    "full_finetune": "backbone + head", "vpt": "10 shallow prompts + head + top norm"}[method]
            rows.append(BudgetRow(f"{label} {method}", c["total"], None, note))
    return rows
