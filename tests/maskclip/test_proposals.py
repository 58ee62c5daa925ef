"""The class-agnostic proposal network: the forward contract, loading, the detectron2 converter."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from common.checkpoints import CorruptCheckpointError
from common.models.cache import BUDGET_ENV
from maskclip.mask2former import _m2f_config, _resnet_config
from maskclip.proposal_training import segment_best_iou
from maskclip.proposals import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_NAME,
    ProposalCheckpointError,
    ProposalNetwork,
    config_from_detectron2,
    convert_detectron2_mask2former,
    detectron2_key_map,
    load_proposal_network,
    r50_config,
    tiny_config,
    to_detectron2,
)


def small_r50_style(num_labels: int = 3, hidden: int = 48) -> torch.nn.Module:
    """An R50-shaped Mask2Former at small widths: bottleneck blocks, several per stage (so blocks without a
    shortcut occur), decoder width != pixel-decoder width (the predictor's input projections exist)."""
    backbone = _resnet_config(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[2, 2, 1, 1],
                              layer_type="bottleneck")
    cfg = _m2f_config(backbone, num_labels=num_labels, feature_size=32, mask_feature_size=32, hidden_dim=hidden,
                      encoder_feedforward_dim=64, encoder_layers=2, decoder_layers=4, num_attention_heads=4,
                      dim_feedforward=64, num_queries=6)
    torch.manual_seed(0)
    net = ProposalNetwork(cfg, image_size=64)
    # non-trivial BatchNorm statistics so that running stats are checked too
    for name, buf in net.m2f.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buf.copy_(torch.rand_like(buf) + 0.5)
    return net


def test_forward_shape_and_normalisation_contract() -> None:
    net = load_proposal_network(None)
    assert net.num_queries == 16 and net.image_size == 64
    assert net.mean == IMAGENET_MEAN and net.std == IMAGENET_STD
    img = torch.rand(2, 3, 64, 64)
    x = net.normalize(img)
    torch.testing.assert_close(x[:, 0], (img[:, 0] - IMAGENET_MEAN[0]) / IMAGENET_STD[0])
    out = net(x)
    assert out.shape == (2, 16, 16, 16)
    assert torch.isfinite(out).all()
    # non-square input: H/4 x W/4
    assert net(torch.randn(1, 3, 64, 96)).shape == (1, 16, 16, 24)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(3, 64, 64))


def test_loaded_network_is_frozen_and_in_eval_mode() -> None:
    net = load_proposal_network(None)
    assert not net.training and not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    out = net(torch.randn(1, 3, 64, 64))
    assert not out.requires_grad


def test_predict_gives_the_training_layout() -> None:
    net = ProposalNetwork(tiny_config())
    out = net.predict(torch.randn(2, 3, 64, 64))
    assert out["pred_logits"].shape == (2, 16, 2)  # one class + no-object
    assert out["pred_masks"].shape == (2, 16, 16, 16)
    assert len(out["aux_outputs"]) == tiny_config().decoder_layers - 1
    # forward (masks only) equals the last layer of predict
    net.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(net(x), net.predict(x)["pred_masks"])


@pytest.mark.parametrize("with_class", [True, False])
def test_detectron2_round_trip(with_class: bool) -> None:
    net = small_r50_style()
    cfg = net.config
    target = {k: v for k, v in net.m2f.state_dict().items()
              if not k.endswith("num_batches_tracked") and not k.startswith("criterion.")
              and (with_class or not k.startswith("class_predictor."))}
    d2 = to_detectron2(target, cfg, with_class_head=with_class)
    assert "backbone.res2.1.conv3.norm.running_var" in d2 and "backbone.res2.1.shortcut.weight" not in d2
    assert "sem_seg_head.predictor.input_proj.2.weight" in d2  # decoder 48 wide, features 32
    d2["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    d2["criterion.empty_weight"] = torch.ones(4)
    conv = convert_detectron2_mask2former({"model": d2, "iteration": 5})
    assert set(conv) == set(target), (set(conv) ^ set(target))
    for k, v in target.items():
        assert conv[k].shape == v.shape, k
        assert torch.equal(conv[k], v), k
    # the config read back from the shapes equals the one it was made with
    back = config_from_detectron2(d2)
    for attr in ("hidden_dim", "feature_size", "mask_feature_size", "encoder_layers", "decoder_layers",
                 "num_attention_heads", "dim_feedforward", "encoder_feedforward_dim", "num_queries"):
        assert getattr(back, attr) == getattr(cfg, attr), attr
    assert back.backbone_config.depths == [2, 2, 1, 1] and back.backbone_config.hidden_sizes == [16, 32, 64, 128]
    # and the converted network computes what the original does
    other = ProposalNetwork(back, image_size=64).eval()
    missing, unexpected = other.m2f.load_state_dict(conv, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") or k.startswith(("criterion.", "class_pred"))
                                  for k in missing)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(other(x), net.eval()(x))


def test_converter_names_unknown_and_missing_keys() -> None:
    net = small_r50_style()
    d2 = to_detectron2(net.m2f.state_dict(), net.config)
    bad = dict(d2)
    bad["sem_seg_head.predictor.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(ProposalCheckpointError, match=r"unknown keys \(1\).*extra_head"):
        convert_detectron2_mask2former(bad, net.config)
    bad = dict(d2)
    del bad["backbone.res3.0.conv2.norm.running_mean"]
    with pytest.raises(ProposalCheckpointError, match=r"missing keys \(1\).*res3\.0\.conv2\.norm\.running_mean"):
        convert_detectron2_mask2former(bad, net.config)


def test_r50_key_table_covers_the_full_model() -> None:
    """At the paper's shapes (built on the meta device: no memory, no time): every target key of a transformers
    Mask2Former R50 has a detectron2 source, with the official names."""
    cfg = r50_config(num_labels=133, num_queries=100)
    with torch.device("meta"):
        net = ProposalNetwork(cfg)
    target = {k: v for k, v in net.m2f.state_dict().items()
              if not k.endswith("num_batches_tracked") and not k.startswith("criterion.")}
    d2 = to_detectron2(target, cfg)
    conv = convert_detectron2_mask2former(d2, cfg)
    assert set(conv) == set(target)
    assert all(conv[k].shape == v.shape for k, v in target.items())
    for key, shape in {
        "backbone.stem.conv1.weight": (64, 3, 7, 7),
        "backbone.res2.0.shortcut.norm.running_var": (256,),
        "backbone.res4.5.conv2.weight": (256, 256, 3, 3),
        "backbone.res5.2.conv3.weight": (2048, 512, 1, 1),
        "sem_seg_head.pixel_decoder.input_proj.0.0.weight": (256, 2048, 1, 1),
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.5.self_attn.sampling_offsets.weight": (192, 256),
        "sem_seg_head.pixel_decoder.adapter_1.norm.weight": (256,),
        "sem_seg_head.pixel_decoder.mask_features.weight": (256, 256, 1, 1),
        "sem_seg_head.predictor.transformer_self_attention_layers.8.self_attn.in_proj_weight": (768, 256),
        "sem_seg_head.predictor.transformer_cross_attention_layers.8.multihead_attn.in_proj_weight": (768, 256),
        "sem_seg_head.predictor.transformer_ffn_layers.0.linear1.weight": (2048, 256),
        "sem_seg_head.predictor.query_feat.weight": (100, 256),
        "sem_seg_head.predictor.mask_embed.layers.2.weight": (256, 256),
        "sem_seg_head.predictor.class_embed.weight": (134, 256),
    }.items():
        assert tuple(d2[key].shape) == shape, key
    assert not any(k.startswith("sem_seg_head.predictor.input_proj") for k in d2)  # widths equal: no projection
    assert "backbone.res2.0.conv1.weight" in detectron2_key_map(cfg)


def test_checkpoint_files(tmp_path: Path) -> None:
    net = small_r50_style()
    d2 = to_detectron2(net.m2f.state_dict(), net.config, with_class_head=False)
    path = tmp_path / "mask_proposal_network.pth"
    torch.save({"model": d2, "iteration": 10}, path)
    loaded = load_proposal_network(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    # a transformers state dict with its config.json beside it
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    net.config.to_json_file(str(hf_dir / "config.json"))
    torch.save(net.m2f.state_dict(), hf_dir / "model.pt")
    torch.testing.assert_close(load_proposal_network(str(hf_dir / "model.pt"))(x), net(x))


def test_bad_checkpoint_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth does not exist.*shapes-mask2former-tiny"):
        load_proposal_network(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ProposalCheckpointError, match=r"cannot read proposal checkpoint .*junk\.pth"):
        load_proposal_network(junk)
    other = tmp_path / "other.pt"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(8, 3, 7, 7)}}, other)
    with pytest.raises(ProposalCheckpointError, match=r"other\.pt.*backbone\.res2"):
        load_proposal_network(other)
    with pytest.raises(ValueError, match="unknown proposal network 'shapes-mask2former-huge'"):
        load_proposal_network("shapes-mask2former-huge")


# -- the cached tiny network ----------------------------------------------------------------------------------------

TEST_BUDGET = "0.03"  # 36 steps on 60 training scenes: enough to beat a random initialisation, a few seconds


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh outputs/ folder in which "shapes-mask2former-tiny" is trained at the test budget (once)."""
    out = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CVINW_OUTPUTS", str(out))
        mp.setenv(BUDGET_ENV, TEST_BUDGET)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the shared test machine is oversubscribed: one thread trains fastest there
        try:
            net = load_proposal_network(TINY_NAME)
        finally:
            torch.set_num_threads(threads)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        yield out / "pretrained" / TINY_NAME


def test_tiny_network_is_trained_cached_and_better_than_the_baselines(tiny_cache: Path) -> None:
    manifest = json.loads((tiny_cache / "manifest.json").read_text())
    assert manifest["budget"] == float(TEST_BUDGET) and manifest["train"]["steps"] == round(1200 * 0.03)
    assert manifest["train"]["final_losses"]["loss"] < manifest["train"]["first_loss"]
    m = manifest["metrics"]
    for baseline in ("random_init", "whole_image"):  # a random network proposes (nearly) the whole image
        assert m["trained"]["things"]["mean_best_iou"] > m[baseline]["things"]["mean_best_iou"] + 5, baseline
        assert m["trained"]["all"]["recall50"] > m[baseline]["all"]["recall50"] + 5, baseline
    assert m["whole_image"]["things"]["recall50"] == 0.0  # no ShapesWorld object covers half an image
    assert m["trained"]["novel"]["segments"] > 0  # novel classes are VOID in training, measured at evaluation


def test_cache_hit_reuses_the_file(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tiny_cache.parents[1]))
    weights = tiny_cache / "weights.pt"
    before = (weights.stat().st_mtime_ns, (tiny_cache / "manifest.json").read_text())
    a = load_proposal_network(TINY_NAME)
    assert (weights.stat().st_mtime_ns, (tiny_cache / "manifest.json").read_text()) == before
    b = load_proposal_network(TINY_NAME)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x))
    saved = torch.load(weights, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in a.m2f.state_dict().items())


def test_corrupt_cached_weights_are_refused(tiny_cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "outputs" / "pretrained" / TINY_NAME
    shutil.copytree(tiny_cache, copy)
    data = (copy / "weights.pt").read_bytes()
    (copy / "weights.pt").write_bytes(data[: len(data) // 2])
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(CorruptCheckpointError, match=r"(?s)weights\.pt.*python -m maskclip\.proposal_training --force"):
        load_proposal_network(TINY_NAME)


def test_segment_best_iou_on_known_masks() -> None:
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2, :2] = True          # 4 px
    gt[1, 2:, :] = True           # 8 px
    props = torch.zeros(2, 4, 4, dtype=torch.bool)
    props[0, :2, :3] = True       # 6 px: IoU with gt0 4/6, with gt1 0
    props[1, 3:, :] = True        # 4 px: IoU with gt1 4/8
    torch.testing.assert_close(segment_best_iou(props, gt), torch.tensor([4 / 6, 0.5]))
    torch.testing.assert_close(segment_best_iou(torch.ones(1, 4, 4, dtype=torch.bool), gt), torch.tensor([0.25, 0.5]))
