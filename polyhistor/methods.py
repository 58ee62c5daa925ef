"""The rows of the Polyhistor table (Swin-T, PASCAL-Context, 4 tasks) and what each row trains.

Paper figures: Polyhistor's PASCAL-Context table as MTLoRA (CVPR 2024) reprints it (not yet re-read against the
Polyhistor PDF: check a figure there before treating it as a target). Trainable parameters in millions; metrics: semseg / human parts / saliency mIoU (%), normals mean
angular error (degrees, lower is better), Δm (%) against single-task full fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigures:
    params_m: float | None
    semseg: float | None = None
    human_parts: float | None = None
    sal: float | None = None
    normals: float | None = None
    delta_m: float | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One table row.

    Attributes:
        name: the config value (``model.init_args.method``).
        label: the row as the paper names it.
        encoder: PEFT family set up in the encoder: none | adapter | compacter | bitfit | lora | vpt | hyper |
            conv_adapter.
        full_finetune: the Swin itself is trained.
        task_agnostic: every task sees the same encoder features (one encoder pass per batch).
        shared_adapters: one adapter set shared by all tasks (VL-Adapter).
        single_task: one model (and one run) per task.
        paper: the paper's figures.
    """

    name: str
    label: str
    encoder: str
    paper: PaperFigures
    full_finetune: bool = False
    task_agnostic: bool = False
    shared_adapters: bool = False
    single_task: bool = False


_ROWS = [
    MethodSpec("single_task", "Single-task full fine-tuning", "none",
               PaperFigures(112.62, 67.21, 61.93, 62.35, 17.97, 0.0), full_finetune=True, task_agnostic=True,
               single_task=True),
    MethodSpec("decoders_only", "MTL - decoders only", "none",
               PaperFigures(1.94, 65.09, 53.48, 57.46, 20.69, -9.95), task_agnostic=True),
    MethodSpec("mtl_full_ft", "MTL - full fine-tuning", "none",
               PaperFigures(30.06, 67.56, 60.24, 65.21, 16.64, 2.23), full_finetune=True, task_agnostic=True),
    MethodSpec("adapter", "Adapter", "adapter", PaperFigures(11.24, 69.21, 57.38, 61.28, 18.83, -2.71)),
    MethodSpec("bitfit", "BitFit", "bitfit", PaperFigures(2.85, 68.57, 55.99, 60.64, 19.42, -4.60)),
    MethodSpec("vpt_shallow", "VPT-shallow", "vpt", PaperFigures(2.57, 62.96, 52.27, 58.31, 20.90, -11.18)),
    MethodSpec("vpt_deep", "VPT-deep", "vpt", PaperFigures(3.43, 64.35, 52.54, 58.15, 21.07, -10.85)),
    MethodSpec("compacter", "Compacter", "compacter", PaperFigures(2.78, 68.08, 56.41, 60.08, 19.22, -4.55)),
    MethodSpec("compacter_pp", "Compacter++", "compacter", PaperFigures(2.66, 67.26, 55.69, 59.47, 19.54, -5.84)),
    MethodSpec("lora", "LoRA", "lora", PaperFigures(2.87, 70.12, 57.73, 61.90, 18.96, -2.17)),
    MethodSpec("vl_adapter", "VL-Adapter", "adapter", PaperFigures(4.74, 70.21, 59.15, 62.29, 19.26, -1.83),
               task_agnostic=True, shared_adapters=True),
    MethodSpec("hyperformer", "Hyperformer", "hyper", PaperFigures(72.77, 71.43, 60.73, 65.54, 17.77, 2.64)),
    MethodSpec("polyhistor", "Polyhistor", "hyper", PaperFigures(8.96, 70.87, 59.54, 65.47, 17.47, 2.34)),
    MethodSpec("polyhistor_lite", "Polyhistor-Lite", "hyper", PaperFigures(None)),
    # beyond the paper: no published table has this row (no paper figures)
    MethodSpec("conv_adapter", "Conv-Adapter (conv. parallel)", "conv_adapter", PaperFigures(None)),
]

#: name -> spec, in the paper's row order
METHODS: dict[str, MethodSpec] = {m.name: m for m in _ROWS}


def method_spec(name: str) -> MethodSpec:
    """The row called ``name``; a clear error listing the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError as err:
        raise ValueError(f"unknown Polyhistor method {name!r}; choose one of {list(METHODS)} "
                         "(polyhistor/methods.py)") from err
