"""Polyhistor (NeurIPS 2022) table: Swin-T (timm ``swin_tiny_patch4_window7_224``, built without weights on the
meta device), 4 PASCAL-Context tasks (semseg 21, human_parts 7, sal 1, normals 3), SegFormer decoders E=256.

The shapes are :class:`polyhistor.encoder.PeftConfig`'s defaults; polyhistor/README.md explains each reading.
"""

from __future__ import annotations

import timm
import torch

from benchmarks.param_budgets import BudgetRow
from polyhistor.encoder import PeftConfig
from polyhistor.methods import METHODS
from polyhistor.network import PASCAL_OUTPUTS, build_network

TITLE = ("Polyhistor table, trainable parameters at paper scale: Swin-T, PASCAL-Context "
         "(semseg 21, human_parts 7, sal 1, normals 3), SegFormer decoders E=256")

NOTES = {
    "single_task": "4 x (Swin-T 27.52M + its decoder)",
    "decoders_only": "4 SegFormer decoders E=256; paper's 1.94 clashes with its own full-FT rows (README)",
    "mtl_full_ft": "Swin-T 27.52M + 4 decoders 2.54M",
    "adapter": "per task, after attn and MLP of every block, hidden = dim/4",
    "bitfit": "per-task biases incl. relative-position bias tables",
    "vpt_shallow": "50 prompts per task at stage 1",
    "vpt_deep": "50 prompts per task per block",
    "compacter": "PHM n=4 rank 1, attn+MLP, per-task layer norms",
    "compacter_pp": "as Compacter, MLP only",
    "lora": "rank 4 on q and v, per task",
    "vl_adapter": "the Adapter row's adapters shared by all tasks",
    "hyperformer": "one generator per stage (z=64, layer embeddings) + generated LN; paper's count fits one per "
                   "block (README)",
    "polyhistor": "one decomposed generator pair per stage (z=64), rank 27",
    "polyhistor_lite": "one decomposed hypernet -> per-task 96-wide templates, per-layer Kronecker scaling kernels; "
                       "paper figure not available here",
    "conv_adapter": "beyond the paper (no published figure): per task, Conv-Adapter parallel to every block's "
                    "attention, gamma 8, k 7: 495,336 per task",
}


def count_row(method: str, peft: PeftConfig | None = None, backbone: str = "swin_tiny_patch4_window7_224",
              tasks: list[str] | None = None, decoder_embed_dim: int = 256) -> int:
    """Trainable parameters of ``method`` at paper scale (single-task: the sum of one model per task)."""
    tasks = list(tasks or PASCAL_OUTPUTS)
    spec = METHODS[method]
    groups = [[t] for t in tasks] if spec.single_task else [tasks]
    total = 0
    with torch.device("meta"):
        for group in groups:
            swin = timm.create_model(backbone, pretrained=False, num_classes=0)
            net = build_network(swin, method, group, PASCAL_OUTPUTS, peft, decoder_embed_dim)
            total += net.trainable_parameters()
    return total


def budget_rows() -> list[BudgetRow]:
    return [BudgetRow(spec.label, count_row(name), spec.paper.params_m, NOTES.get(name, ""))
            for name, spec in METHODS.items()]
