"""Generic parameter-efficient fine-tuning pieces shared by the papers.

* :mod:`common.peft.accounting`: freezing and parameter counting (shared tensors once).
* :mod:`common.peft.context`: :class:`TaskContext`, the active task of a multi-task backbone.
* :mod:`common.peft.inject`: named insertion points of Swin / ViT / ResNet / ConvNeXt blocks, and
  :func:`~common.peft.inject.inject` to attach modules there by forward hooks.
* :mod:`common.peft.adapter`: bottleneck (Houlsby) adapters, per task or shared (VL-Adapter).
* :mod:`common.peft.lora`: LoRA updates, including slices of a fused qkv projection.
* :mod:`common.peft.bitfit`: per-task deltas on frozen tensors (BitFit, per-task norm tuning).
* :mod:`common.peft.compacter`: PHM layers and Compacter adapters.
* :mod:`common.peft.swin`: timm Swin blocks, stage widths and stage features.
* :mod:`common.peft.vpt`: VPT shallow/deep for timm Swin.
"""

from common.peft.accounting import count_parameters, freeze, trainable_parameter_names, unfreeze
from common.peft.context import TaskContext

__all__ = ["TaskContext", "count_parameters", "freeze", "trainable_parameter_names", "unfreeze"]
