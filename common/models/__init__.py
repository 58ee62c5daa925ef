"""Backbone builders: one loading path for every weight the project uses.

* :func:`load_clip` - open_clip CLIPs: ``load_clip("shapes-clip-tiny", "shapes-clip-tiny")`` (ShapesWorld-pretrained,
  cached under ``outputs/pretrained/``), ``load_clip("ViT-B-16", "openai")`` (internet), or a local checkpoint path.
* :func:`build_timm` - timm backbones: ``build_timm("shapes-swin-tiny", "shapes-swin-tiny", features_only=True)``,
  ``build_timm("resnet50", "a1_in1k")`` (internet), or a local checkpoint path.
* :func:`ensure_pretrained` - the cache of ShapesWorld-pretrained weights (``cache.py``); a miss is trained by
  :func:`common.models.pretrain.pretrain`, registered here as the cache's trainer.
"""

from common.models import pretrain as _pretrain
from common.models.cache import ensure_pretrained, read_manifest, register_trainer
from common.models.clip import LoadedCLIP, PreprocessInfo, load_clip, register_clip_configs
from common.models.registry import SHAPES_MODELS, ShapesModel, TrainRecipe, get_shapes_model
from common.models.timm_models import build_timm

register_trainer(_pretrain.pretrain)  # a cache miss trains (cache.py itself never imports the training code)

__all__ = [
    "SHAPES_MODELS",
    "LoadedCLIP",
    "PreprocessInfo",
    "ShapesModel",
    "TrainRecipe",
    "build_timm",
    "ensure_pretrained",
    "get_shapes_model",
    "load_clip",
    "read_manifest",
    "register_clip_configs",
]
