"""The proposal network: ``transformers``' Mask2Former, masks only, and the detectron2 checkpoint converter.

MaskCLIP's first stage [official code] is a Mask2Former (R50, 100 queries) trained on COCO panoptic with its class
head removed: it proposes masks, CLIP names them. Here:

* :class:`ProposalNetwork` wraps :class:`transformers.Mask2FormerForUniversalSegmentation`; ``forward(images)``
  takes images already normalised with ``self.mean`` / ``self.std`` and returns the last decoder layer's mask logits
  ``(B, Q, H/4, W/4)``. The class head (one class + no-object, an objectness score) is only used to train the tiny
  network class-agnostically (:mod:`maskclip.proposal_training`); MaskCLIP never reads it.
* :func:`maskclip.proposals.load_proposal_network` builds one, frozen and in eval mode: the cached tiny network,
  a local checkpoint file (:func:`load_checkpoint_file`: a ``transformers`` state dict, or the official
  detectron2-format one, converted on the fly by :func:`convert_detectron2_mask2former`), or a random
  initialisation of the tiny configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig
from transformers.utils import logging as hf_logging

__all__ = [
    "TINY_NAME",
    "ProposalCheckpointError",
    "ProposalNetwork",
    "convert_detectron2_mask2former",
    "detectron2_key_map",
    "load_checkpoint_file",
    "r50_config",
    "tiny_config",
    "to_detectron2",
]

#: the cached tiny proposal network's name (``outputs/pretrained/shapes-mask2former-tiny/``)
TINY_NAME = "shapes-mask2former-tiny"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: the tiny configuration (a ``transformers`` ResNet with bottleneck blocks, as the paper's R50, at tiny widths)
TINY_ARCH: dict[str, Any] = {
    "image_size": 64,
    "backbone": {"embedding_size": 16, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1],
                 "layer_type": "bottleneck"},
    "mask2former": {"feature_size": 64, "mask_feature_size": 64, "hidden_dim": 64, "encoder_feedforward_dim": 128,
                    "encoder_layers": 2, "decoder_layers": 4, "num_attention_heads": 4, "dim_feedforward": 128,
                    "num_queries": 16},
}


def _resnet_config(**kwargs: Any) -> ResNetConfig:
    return ResNetConfig(out_features=["stage1", "stage2", "stage3", "stage4"], downsample_in_bottleneck=False,
                        **kwargs)


def _m2f_config(backbone: ResNetConfig, num_labels: int, **kwargs: Any) -> Mask2FormerConfig:
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "Backbone resnet is not a supported model": it is (the official R50 is one)
    try:
        return Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def tiny_config(num_queries: int | None = None) -> Mask2FormerConfig:
    """The tiny configuration: ResNet (bottleneck 1-1-1-1, 32-64-128-256, stem 16), pixel decoder width 64 with 2
    deformable encoder layers, transformer decoder width 64 with 3 masked-attention layers, 16 queries, one class
    (+ no-object)."""
    m2f = dict(TINY_ARCH["mask2former"])
    if num_queries is not None:
        m2f["num_queries"] = num_queries
    return _m2f_config(_resnet_config(**TINY_ARCH["backbone"]), num_labels=1, **m2f)


def r50_config(num_labels: int = 133, num_queries: int = 100) -> Mask2FormerConfig:
    """Mask2Former R50 as the official COCO panoptic config: ResNet-50 (stride in the 3x3 conv, torchvision style),
    MSDeformAttn pixel decoder (256 wide, 6 layers, 1024 FFN), 9 masked-attention decoder layers (+ the learnable
    query prediction: ``decoder_layers=10``), 8 heads, FFN 2048, 100 queries."""
    backbone = _resnet_config(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                              layer_type="bottleneck")
    return _m2f_config(backbone, num_labels=num_labels, feature_size=256, mask_feature_size=256, hidden_dim=256,
                       encoder_feedforward_dim=1024, encoder_layers=6, decoder_layers=10, num_attention_heads=8,
                       dim_feedforward=2048, num_queries=num_queries)


class ProposalCheckpointError(ValueError):
    """A proposal checkpoint that cannot be read or converted (names the file or the offending keys)."""


class ProposalNetwork(nn.Module):
    """A Mask2Former used as a class-agnostic mask proposal network.

    ``forward(images)``: ``(B, 3, H, W)`` images normalised with :attr:`mean` / :attr:`std` (RGB, [0, 1] scale)
    -> ``(B, Q, H/4, W/4)`` mask logits of the last decoder layer. :meth:`predict` also gives the auxiliary layers'
    masks and the class logits (training only).
    """

    def __init__(self, config: Mask2FormerConfig | None = None, *, image_size: int = TINY_ARCH["image_size"],
                 mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self.config = config if config is not None else tiny_config()
        self.m2f = Mask2FormerForUniversalSegmentation(self.config)
        self.mean: tuple[float, float, float] = tuple(mean)  # type: ignore[assignment]
        self.std: tuple[float, float, float] = tuple(std)  # type: ignore[assignment]
        self.num_queries: int = int(self.config.num_queries)
        self.image_size: int = int(image_size)

    def normalize(self, images: Tensor) -> Tensor:
        """``[0, 1]`` RGB images -> the input :meth:`forward` expects."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ProposalNetwork expects (B, 3, H, W) images, got {tuple(images.shape)}")
        out = self.m2f.model(pixel_values=images)
        return out.masks_queries_logits[-1]

    def predict(self, images: Tensor) -> dict[str, Any]:
        """Mask2Former's training layout: ``pred_logits`` ``(B, Q, 2)`` (object, no-object), ``pred_masks``
        ``(B, Q, H/4, W/4)`` and ``aux_outputs`` (the earlier decoder layers), as
        :class:`maskclip.losses.MaskCLIPCriterion` reads it."""
        out = self.m2f(pixel_values=images, output_auxiliary_logits=True)
        aux = [{"pred_logits": a["class_queries_logits"], "pred_masks": a["masks_queries_logits"]}
               for a in (out.auxiliary_logits or [])]
        return {"pred_logits": out.class_queries_logits, "pred_masks": out.masks_queries_logits,
                "aux_outputs": aux}

    @torch.no_grad()
    def objectness(self, images: Tensor) -> Tensor:
        """``(B, Q)`` probability that a query is an object (the 1-class head); meaningful only for a network
        trained with it (the tiny one), not for a converted checkpoint without a class head."""
        logits = self.m2f(pixel_values=images).class_queries_logits
        return logits.softmax(-1)[..., :-1].sum(-1)


# -- detectron2 -> transformers -------------------------------------------------------------------------------------

_BN = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def detectron2_key_map(config: Mask2FormerConfig, *, with_class_head: bool = True) -> dict[str, str | tuple[str, int]]:
    """detectron2 key -> transformers key (or ``(key, part)`` for a ``q|k|v`` slice of an ``in_proj``) for a
    Mask2Former with a ResNet backbone of this config.

    Names learnt from the official code (detectron2 ``ResNet`` / ``BasicStem`` / ``BottleneckBlock`` with
    ``Conv2d(norm=...)``; Mask2Former's ``MSDeformAttnPixelDecoder`` and ``MultiScaleMaskedTransformerDecoder``):

    * ``backbone.stem.conv1`` -> ``model.pixel_level_module.encoder.embedder.embedder.{convolution,normalization}``;
      ``backbone.res{s+2}.{b}.conv{1,2,3}`` / ``.shortcut`` (each with ``.norm``) -> ``...stages.{s}.layers.{b}
      .layer.{0,1,2}`` / ``.shortcut``;
    * ``sem_seg_head.pixel_decoder.input_proj.{i}.{0,1}`` (conv, GroupNorm) -> ``decoder.input_projections.{i}``;
      ``.transformer.level_embed`` -> ``decoder.level_embed``; ``.transformer.encoder.layers.{l}.self_attn.*`` (as
      is), ``norm1`` / ``linear1`` / ``linear2`` / ``norm2`` -> ``self_attn_layer_norm`` / ``fc1`` / ``fc2`` /
      ``final_layer_norm``; ``mask_features`` -> ``mask_projection``; ``adapter_1`` / ``layer_1`` (conv + ``.norm``)
      -> ``adapter_1.{0,1}`` / ``layer_1.{0,1}``;
    * ``sem_seg_head.predictor.transformer_self_attention_layers.{i}.self_attn.in_proj_{weight,bias}`` -> split into
      ``q_proj`` / ``k_proj`` / ``v_proj``; ``transformer_cross_attention_layers.{i}.multihead_attn`` ->
      ``cross_attn`` (both ``nn.MultiheadAttention``); ``.norm`` -> ``self_attn_layer_norm`` /
      ``cross_attn_layer_norm``; ``transformer_ffn_layers.{i}.{linear1,linear2,norm}`` -> ``fc1`` / ``fc2`` /
      ``final_layer_norm``; ``decoder_norm`` -> ``decoder.layernorm``; ``query_feat`` / ``query_embed`` ->
      ``queries_features`` / ``queries_embedder``; ``level_embed`` -> ``level_embed``; ``input_proj.{i}`` (a conv
      when the widths differ) -> ``input_projections.{i}``; ``mask_embed.layers.{j}`` ->
      ``mask_predictor.mask_embedder.{j}.0``; ``class_embed`` -> ``class_predictor`` (absent from MaskCLIP's
      class-agnostic proposal checkpoint: ``with_class_head=False``).

    BatchNorm ``num_batches_tracked`` (detectron2's ``FrozenBatchNorm2d`` has none) is not mapped: the converter
    fills it with 0.
    """
    m: dict[str, str | tuple[str, int]] = {}
    bb = config.backbone_config
    enc = "model.pixel_level_module.encoder."

    def conv_bn(src: str, dst: str) -> None:
        m[f"{src}.weight"] = f"{dst}.convolution.weight"
        for a, b in _BN.items():
            m[f"{src}.norm.{a}"] = f"{dst}.normalization.{b}"

    conv_bn("backbone.stem.conv1", enc + "embedder.embedder")
    bottleneck = bb.layer_type == "bottleneck"
    in_ch = bb.embedding_size
    for s, (depth, out_ch) in enumerate(zip(bb.depths, bb.hidden_sizes, strict=True)):
        for b in range(depth):
            src, dst = f"backbone.res{s + 2}.{b}", f"{enc}encoder.stages.{s}.layers.{b}"
            for j in range(3 if bottleneck else 2):
                conv_bn(f"{src}.conv{j + 1}", f"{dst}.layer.{j}")
            stride = 2 if (s > 0 or bb.downsample_in_first_stage) and b == 0 else 1
            if b == 0 and (in_ch != out_ch or stride != 1):
                conv_bn(f"{src}.shortcut", f"{dst}.shortcut")
        in_ch = out_ch

    pd, tpd = "sem_seg_head.pixel_decoder.", "model.pixel_level_module.decoder."
    n_levels = len(config.feature_strides) - 1  # the deformable encoder reads res3-res5
    for i in range(n_levels):
        for j in ("0", "1"):
            for p in ("weight", "bias"):
                m[f"{pd}input_proj.{i}.{j}.{p}"] = f"{tpd}input_projections.{i}.{j}.{p}"
    m[f"{pd}transformer.level_embed"] = f"{tpd}level_embed"
    for layer in range(config.encoder_layers):
        src, dst = f"{pd}transformer.encoder.layers.{layer}.", f"{tpd}encoder.layers.{layer}."
        for sub in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            for p in ("weight", "bias"):
                m[f"{src}self_attn.{sub}.{p}"] = f"{dst}self_attn.{sub}.{p}"
        for a, b in (("norm1", "self_attn_layer_norm"), ("linear1", "fc1"), ("linear2", "fc2"),
                     ("norm2", "final_layer_norm")):
            for p in ("weight", "bias"):
                m[f"{src}{a}.{p}"] = f"{dst}{b}.{p}"
    for p in ("weight", "bias"):
        m[f"{pd}mask_features.{p}"] = f"{tpd}mask_projection.{p}"
    # FPN levels above the common stride (res2 at stride 4: one level, adapter_1 / layer_1)
    num_fpn = int(math.log2(min(config.feature_strides[1:])) - math.log2(config.common_stride))
    for idx in range(1, num_fpn + 1):
        for name in (f"adapter_{idx}", f"layer_{idx}"):
            m[f"{pd}{name}.weight"] = f"{tpd}{name}.0.weight"
            m[f"{pd}{name}.norm.weight"] = f"{tpd}{name}.1.weight"
            m[f"{pd}{name}.norm.bias"] = f"{tpd}{name}.1.bias"

    pr, tm = "sem_seg_head.predictor.", "model.transformer_module."
    dec = tm + "decoder."
    for layer in range(config.decoder_layers - 1):
        sa, ca, ff = (f"{pr}transformer_self_attention_layers.{layer}.",
                      f"{pr}transformer_cross_attention_layers.{layer}.", f"{pr}transformer_ffn_layers.{layer}.")
        dst = f"{dec}layers.{layer}."
        for p in ("weight", "bias"):
            m[f"{sa}self_attn.in_proj_{p}"] = (f"{dst}self_attn.{{}}.{p}", 3)  # q / k / v rows
            m[f"{sa}self_attn.out_proj.{p}"] = f"{dst}self_attn.out_proj.{p}"
            m[f"{sa}norm.{p}"] = f"{dst}self_attn_layer_norm.{p}"
            m[f"{ca}multihead_attn.in_proj_{p}"] = f"{dst}cross_attn.in_proj_{p}"
            m[f"{ca}multihead_attn.out_proj.{p}"] = f"{dst}cross_attn.out_proj.{p}"
            m[f"{ca}norm.{p}"] = f"{dst}cross_attn_layer_norm.{p}"
            m[f"{ff}linear1.{p}"] = f"{dst}fc1.{p}"
            m[f"{ff}linear2.{p}"] = f"{dst}fc2.{p}"
            m[f"{ff}norm.{p}"] = f"{dst}final_layer_norm.{p}"
    for p in ("weight", "bias"):
        m[f"{pr}decoder_norm.{p}"] = f"{dec}layernorm.{p}"
        for j in range(3):
            m[f"{pr}mask_embed.layers.{j}.{p}"] = f"{dec}mask_predictor.mask_embedder.{j}.0.{p}"
        if with_class_head:
            m[f"{pr}class_embed.{p}"] = f"class_predictor.{p}"
    m[f"{pr}query_feat.weight"] = f"{tm}queries_features.weight"
    m[f"{pr}query_embed.weight"] = f"{tm}queries_embedder.weight"
    m[f"{pr}level_embed.weight"] = f"{tm}level_embed.weight"
    if config.hidden_dim != config.feature_size or config.enforce_input_projection:
        for i in range(3):
            for p in ("weight", "bias"):
                m[f"{pr}input_proj.{i}.{p}"] = f"{tm}input_projections.{i}.{p}"
    return m


#: the q / k / v parts of a self-attention ``in_proj``, in its row order
_QKV = ("q_proj", "k_proj", "v_proj")

#: detectron2 keys that hold no weight of the network: the meta-architecture's pixel normalisation and the
#: criterion's class weights (checked / dropped, never an error)
_NON_WEIGHT_KEYS = ("pixel_mean", "pixel_std", "criterion.empty_weight")


def _expand(key_map: Mapping[str, str | tuple[str, int]]) -> dict[str, str]:
    """Target key -> source key (an ``in_proj`` source appears three times, as ``src#0|1|2``)."""
    out: dict[str, str] = {}
    for src, dst in key_map.items():
        if isinstance(dst, tuple):
            for part, name in enumerate(_QKV):
                out[dst[0].format(name)] = f"{src}#{part}"
        else:
            out[dst] = src
    return out


def config_from_detectron2(state_dict: Mapping[str, Tensor], num_queries: int | None = None) -> Mask2FormerConfig:
    """The Mask2Former config a detectron2 R50-style checkpoint was made with, read from its shapes."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise ProposalCheckpointError(f"not a detectron2 Mask2Former checkpoint: key {key!r} is missing")
        return tuple(state_dict[key].shape)

    stem = shape("backbone.stem.conv1.weight")[0]
    depths, widths = [], []
    for s in range(2, 6):
        n = len({k.split(".")[2] for k in state_dict if k.startswith(f"backbone.res{s}.")})
        if n == 0:
            raise ProposalCheckpointError(f"not a ResNet detectron2 checkpoint: no backbone.res{s}.* keys")
        depths.append(n)
        widths.append(shape(f"backbone.res{s}.0.conv{3 if f'backbone.res{s}.0.conv3.weight' in state_dict else 2}"
                            ".weight")[0])
    layer_type = "bottleneck" if "backbone.res2.0.conv3.weight" in state_dict else "basic"
    backbone = _resnet_config(embedding_size=stem, hidden_sizes=widths, depths=depths, layer_type=layer_type)
    pd, pr = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
    feature_size = shape(f"{pd}mask_features.weight")[1]
    mask_feature_size = shape(f"{pd}mask_features.weight")[0]
    enc_layers = len({k.split(".")[5] for k in state_dict if k.startswith(f"{pd}transformer.encoder.layers.")})
    dec_layers = len({k.split(".")[3] for k in state_dict
                      if k.startswith(f"{pr}transformer_self_attention_layers.")}) + 1
    hidden = shape(f"{pr}query_feat.weight")[1]
    q = shape(f"{pr}query_feat.weight")[0]
    heads_d = shape(f"{pd}transformer.encoder.layers.0.self_attn.attention_weights.weight")[0]  # heads*levels*points
    enc_ff = shape(f"{pd}transformer.encoder.layers.0.linear1.weight")[0]
    dec_ff = shape(f"{pr}transformer_ffn_layers.0.linear1.weight")[0]
    num_labels = shape(f"{pr}class_embed.weight")[0] - 1 if f"{pr}class_embed.weight" in state_dict else 1
    heads = heads_d // (3 * 4)  # 3 levels x 4 points, Mask2Former's fixed values
    return _m2f_config(backbone, num_labels=num_labels, feature_size=feature_size,
                       mask_feature_size=mask_feature_size, hidden_dim=hidden, encoder_feedforward_dim=enc_ff,
                       encoder_layers=enc_layers, decoder_layers=dec_layers, num_attention_heads=heads,
                       dim_feedforward=dec_ff, num_queries=num_queries or q)


def convert_detectron2_mask2former(state_dict: Mapping[str, Any], config: Mask2FormerConfig | None = None, *,
                                   strict: bool = True) -> dict[str, Tensor]:
    """An official detectron2-format Mask2Former (ResNet backbone) state dict -> a
    :class:`transformers.Mask2FormerForUniversalSegmentation` state dict.

    Accepts the checkpoint file's dict (``{"model": {...}, ...}``) or the model dict itself; numpy arrays become
    tensors. ``config`` defaults to the one read from the shapes (:func:`config_from_detectron2`). Every source key
    must be known and every mapped target key present (``strict``), else a :class:`ProposalCheckpointError` lists
    them; the class head is optional (MaskCLIP's proposal checkpoint has none). Values are copied unchanged (the
    self-attention ``in_proj`` split into q / k / v rows).
    """
    sd = state_dict.get("model", state_dict) if isinstance(state_dict, Mapping) else state_dict
    sd = {k: (v if isinstance(v, Tensor) else torch.as_tensor(v)) for k, v in sd.items()}
    if config is None:
        config = config_from_detectron2(sd)
    with_class = "sem_seg_head.predictor.class_embed.weight" in sd
    key_map = detectron2_key_map(config, with_class_head=with_class)
    unknown = sorted(k for k in sd if k not in key_map and k not in _NON_WEIGHT_KEYS)
    missing = sorted(k for k in key_map if k not in sd)
    if strict and (unknown or missing):
        raise ProposalCheckpointError(
            "detectron2 Mask2Former checkpoint does not match the expected R50-style keys"
            + (f"; unknown keys ({len(unknown)}): {unknown[:20]}" if unknown else "")
            + (f"; missing keys ({len(missing)}): {missing[:20]}" if missing else "")
            + ". The converter knows ResNet backbones (backbone.stem / res2-res5), the MSDeformAttn pixel decoder and "
              "the masked-attention decoder (maskclip/mask2former.py detectron2_key_map).")
    out: dict[str, Tensor] = {}
    for dst, src in _expand(key_map).items():
        base, _, part = src.partition("#")
        if base not in sd:
            continue
        v = sd[base]
        if part:
            v = v.chunk(3, dim=0)[int(part)]
        out[dst] = v.clone()
    return out


def to_detectron2(state_dict: Mapping[str, Tensor], config: Mask2FormerConfig, *,
                  with_class_head: bool = True) -> dict[str, Tensor]:
    """The inverse of :func:`convert_detectron2_mask2former` on the same key table (for tests and for writing a
    transformers-trained network in the official layout)."""
    key_map = detectron2_key_map(config, with_class_head=with_class_head)
    out: dict[str, Tensor] = {}
    for src, dst in key_map.items():
        if isinstance(dst, tuple):
            out[src] = torch.cat([state_dict[dst[0].format(n)] for n in _QKV], 0).clone()
        else:
            out[src] = state_dict[dst].clone()
    return out


# -- loading ------------------------------------------------------------------------------------------------------

def _is_detectron2(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(("backbone.", "sem_seg_head.")) for k in sd)


def load_checkpoint_file(path: Path) -> ProposalNetwork:
    """A proposal network from a local checkpoint: a ``transformers`` Mask2Former state dict (``.bin`` / ``.pt`` /
    ``.pth`` / ``.safetensors``, keys ``model.pixel_level_module...``, optionally under ``"state_dict"``) with its
    ``config.json`` beside it or the R50 config, or an official detectron2-format checkpoint (converted)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"proposal checkpoint {path} does not exist; give a Mask2Former R50 checkpoint file (transformers state "
            f"dict or the official detectron2 .pth), or \"{TINY_NAME}\" for the tiny ShapesWorld network")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise ProposalCheckpointError(
            f"cannot read proposal checkpoint {path}: {type(err).__name__}: {err}. Expected a torch.save'd state "
            "dict (transformers Mask2Former keys, or the official detectron2 keys under \"model\") or a "
            ".safetensors file; a detectron2 .pkl must be re-saved with torch.save first.") from err
    if not isinstance(raw, Mapping):
        raise ProposalCheckpointError(f"proposal checkpoint {path} holds a {type(raw).__name__}, not a state dict")
    sd = raw.get("model", raw.get("state_dict", raw))
    if not isinstance(sd, Mapping) or not sd:
        raise ProposalCheckpointError(f"proposal checkpoint {path} holds no state dict (keys: {list(raw)[:10]})")
    if _is_detectron2(sd):
        try:
            config = config_from_detectron2(sd)
            sd = convert_detectron2_mask2former(sd, config)
        except ProposalCheckpointError as err:
            raise ProposalCheckpointError(f"{path}: {err}") from err
        image_size = 1024
    else:
        cfg_file = path.parent / "config.json"
        config = Mask2FormerConfig.from_json_file(str(cfg_file)) if cfg_file.is_file() else r50_config()
        image_size = int(raw.get("image_size", 1024)) if isinstance(raw.get("image_size"), int) else 1024
    net = ProposalNetwork(config, image_size=image_size)
    target = net.m2f.state_dict()
    optional = {k for k in target if k.startswith("class_predictor.") or k.startswith("criterion.")
                or k.endswith("num_batches_tracked")}
    missing = sorted(k for k in target if k not in sd and k not in optional)
    unknown = sorted(k for k in sd if k not in target)
    bad_shape = sorted(f"{k}: {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sd
                       if k in target and tuple(sd[k].shape) != tuple(target[k].shape))
    if missing or unknown or bad_shape:
        raise ProposalCheckpointError(
            f"proposal checkpoint {path} does not fit the Mask2Former config"
            + (f"; missing keys ({len(missing)}): {missing[:20]}" if missing else "")
            + (f"; unknown keys ({len(unknown)}): {unknown[:20]}" if unknown else "")
            + (f"; shape mismatches: {bad_shape[:10]}" if bad_shape else "")
            + (". Put the model's config.json beside the file." if not (path.parent / "config.json").is_file()
               else "."))
    net.m2f.load_state_dict(sd, strict=False)
    return net
