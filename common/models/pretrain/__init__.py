"""Pretraining of the tiny ShapesWorld backbones (``python -m common.data.synth pretrain --all`` or ``make pretrain``).

* ``shapes-clip-tiny``: an open_clip CLIP trained contrastively (open_clip's ``ClipLoss``) on ShapesWorld
  image-caption pairs. The colour-shape pairs of :data:`~common.data.synth.world.HELD_OUT_COMBOS` never appear, so
  zero-shot accuracy on them measures composition.
* ``shapes-swin-tiny`` / ``shapes-resnet-tiny`` / ``shapes-convnext-tiny``: timm models trained as multi-label
  classifiers of what is in the scene: the shapes (and person), their colours, and the stuff classes.

All of them share one pool of rendered scenes (made once per process). The result goes to
``outputs/pretrained/<name>/weights.pt`` with a ``manifest.json``: architecture, recipe, seed, budget, data
fingerprint, final metrics (zero-shot accuracy for the CLIP, linear-probe accuracy against a random initialisation of
the same architecture for the timm models) and the time taken.

The budget (default 1.0) scales the number of steps and the size of the data pool; a small budget (e.g. 0.05) gives
a quick, weaker model for tests.

The package, by concern (every public name is importable from ``common.models.pretrain``):

* :mod:`~common.models.pretrain.data` - label vocabulary, scene specs, rendered pools (:func:`get_data`);
* :mod:`~common.models.pretrain.train` - the training loops (:func:`train_clip`, :func:`train_timm`);
* :mod:`~common.models.pretrain.evaluate` - zero-shot and linear-probe metrics;
* :mod:`~common.models.pretrain.build` - one cache entry, weights + manifest (:func:`pretrain`);
* :mod:`~common.models.pretrain.cli` - the ``pretrain`` command of ``python -m common.data.synth``.
"""

from common.models.pretrain.build import pretrain
from common.models.pretrain.cli import cli_commands
from common.models.pretrain.data import (
    DATA_SEED,
    EVAL_SIZE,
    HELD_OUT_PER_COMBO,
    LABEL_GROUPS,
    LABELS,
    POOL_SIZE,
    Pool,
    PretrainData,
    eval_specs,
    get_data,
    pool_sizes,
    progress_bar,
    render_pool,
    to_tensor,
    train_specs,
)
from common.models.pretrain.evaluate import (
    ZERO_SHOT_TEMPLATES,
    clip_zero_shot,
    linear_probe,
    probe_metrics,
    timm_features,
)
from common.models.pretrain.train import PRETRAIN_NO_DECAY, multilabel_loss, train_clip, train_timm

__all__ = [
    "DATA_SEED",
    "EVAL_SIZE",
    "HELD_OUT_PER_COMBO",
    "LABELS",
    "LABEL_GROUPS",
    "POOL_SIZE",
    "PRETRAIN_NO_DECAY",
    "ZERO_SHOT_TEMPLATES",
    "Pool",
    "PretrainData",
    "cli_commands",
    "clip_zero_shot",
    "eval_specs",
    "get_data",
    "linear_probe",
    "multilabel_loss",
    "pool_sizes",
    "pretrain",
    "probe_metrics",
    "progress_bar",
    "render_pool",
    "timm_features",
    "to_tensor",
    "train_clip",
    "train_specs",
    "train_timm",
]
