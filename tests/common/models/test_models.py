"""The tiny ShapesWorld backbones and the one loading path (common.models), at a small pretraining budget.

One session fixture pretrains all four backbones into the session's temporary ``outputs/pretrained`` (conftest sets
CVINW_OUTPUTS); the tests then check what pretraining bought (zero-shot, linear probe) through the public loaders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.data.synth import world as W
from common.models import SHAPES_MODELS, build_timm, ensure_pretrained, load_clip, read_manifest
from common.models import pretrain as P
from common.models.cache import cache_dir, cache_is_valid, file_sha256
from common.paths import pretrained_dir

#: the test recipes: about two minutes for all four, a quarter of the default data and a fraction of its steps (the
#: figures at the default budget are in the manifests that `python -m common.data.synth pretrain --all` writes and
#: in common/models/README.md). The ResNet and ConvNeXt only need to exist here (loading and caching tests).
DATA_BUDGET = 0.25  # 3,000 training scenes, 600 seen + 200 held-out evaluation scenes
RECIPES = {
    "shapes-clip-tiny": {"steps": 250},
    "shapes-swin-tiny": {"steps": 500},
    "shapes-resnet-tiny": {"steps": 12},
    "shapes-convnext-tiny": {"steps": 12},
}
#: what the test budget must reach (measured there: CLIP pair accuracy 23.5% seen / 20.5% held-out, shape 24.3%;
#: Swin shape probe 14.0% vs 8.7% for the random Swin, colour probe 89.3% vs 16.7%)
THRESHOLDS = {"clip_pair_seen": 12.0, "clip_pair_held_out": 10.0, "clip_shape_seen": 1.6, "swin_shape_gain": 0.02}


@pytest.fixture(scope="session")
def tiny_cache() -> dict[str, dict]:
    """Pretrain the four backbones once per session (into the temporary outputs/pretrained) and return manifests."""
    assert "cvinw-tests-" in str(pretrained_dir()), "tests must not write the user's outputs/"
    manifests = {}
    for name, recipe in RECIPES.items():
        ensure_pretrained(name, budget=1.0, data_budget=DATA_BUDGET, recipe=recipe)
        manifests[name] = read_manifest(name)
    return manifests


def test_manifests_describe_the_run(tiny_cache: dict[str, dict]) -> None:
    for name, m in tiny_cache.items():
        assert m["name"] == name and m["data_budget"] == DATA_BUDGET
        assert m["recipe"]["steps"] == RECIPES[name]["steps"]
        assert m["arch"] == json.loads(json.dumps(SHAPES_MODELS[name].arch_config()))
        assert m["weights"]["sha256"] == file_sha256(cache_dir(name) / "weights.pt")
        assert m["time_s"]["total"] > 0 and m["seed"] == SHAPES_MODELS[name].recipe.seed
        assert m["data"]["train_images"] == P.pool_sizes(DATA_BUDGET)[0]
        assert cache_is_valid(name)
    # one data pool for all (rendered once), so one fingerprint
    assert len({m["data"]["fingerprint"] for m in tiny_cache.values()}) == 1


def test_clip_zero_shot_far_above_chance(tiny_cache: dict[str, dict]) -> None:
    """Caption prompts classify one-shape images into all 100 colour-shape pairs far above chance (1%), also for the
    five pairs that never appeared in a training caption; recomputed through the public loader. A random CLIP of the
    same architecture is at chance, so the figures are what pretraining bought."""
    model, tokenizer, pre = load_clip("shapes-clip-tiny", "shapes-clip-tiny")
    assert pre.image_size == 64
    data = P.get_data(DATA_BUDGET)
    metrics = P.clip_zero_shot(model, tokenizer, pre, data)
    stored = tiny_cache["shapes-clip-tiny"]["metrics"]
    for k, v in metrics.items():
        assert v == pytest.approx(stored[k], abs=1e-6), k  # the cached weights are the trained ones
    assert len(data.eval_held.images) == 200 and len(data.eval_seen.images) == 600
    chance = metrics["chance"]
    assert chance == 0.01
    assert metrics["zero_shot_acc_seen"] > THRESHOLDS["clip_pair_seen"] * chance
    assert metrics["zero_shot_acc_held_out"] > THRESHOLDS["clip_pair_held_out"] * chance
    assert metrics["zero_shot_shape_acc_seen"] > THRESHOLDS["clip_shape_seen"] / len(W.SHAPES)
    assert metrics["zero_shot_colour_acc_held_out"] > 0.5
    rnd = P.clip_zero_shot(load_clip("shapes-clip-tiny", None).model, tokenizer, pre, data)
    assert rnd["zero_shot_acc_seen"] < 3 * chance and rnd["zero_shot_acc_held_out"] < 3 * chance


def test_swin_linear_probe_beats_random_init(tiny_cache: dict[str, dict]) -> None:
    """A linear probe on frozen pretrained Swin features beats the same probe on a random Swin of the same
    architecture, for the shape of the object and for its colour."""
    spec = SHAPES_MODELS["shapes-swin-tiny"]
    data = P.get_data(DATA_BUDGET)
    loaded = build_timm("shapes-swin-tiny", "shapes-swin-tiny", num_classes=len(P.LABELS)).eval()
    metrics = P.probe_metrics(loaded, spec, data)
    assert metrics == pytest.approx(tiny_cache["shapes-swin-tiny"]["metrics"], abs=1e-6)
    assert metrics["probe_shape_acc_pretrained"] > metrics["probe_shape_acc_random_init"] + THRESHOLDS["swin_shape_gain"]
    assert metrics["probe_colour_acc_pretrained"] > metrics["probe_colour_acc_random_init"] + 0.3


def test_swin_keeps_four_stages_with_doubling_widths() -> None:
    m = build_timm("shapes-swin-tiny", None, features_only=True)
    chans = m.feature_info.channels()
    assert len(chans) == 4 and all(b == 2 * a for a, b in zip(chans, chans[1:]))
    feats = m(torch.zeros(2, 3, 64, 64))
    assert [tuple(f.shape[1:3]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]  # NHWC stages


def _same_state(a: dict, b: dict, skip: tuple[str, ...] = ()) -> bool:
    keys = [k for k in a if not k.startswith(skip)]
    return all(k in b and torch.equal(a[k], b[k]) for k in keys) and len(keys) > 0


def test_cache_loads_identical_weights_without_retraining(tiny_cache: dict[str, dict]) -> None:
    for name in ("shapes-resnet-tiny", "shapes-convnext-tiny", "shapes-swin-tiny"):
        path = cache_dir(name) / "weights.pt"
        mtime = path.stat().st_mtime_ns
        saved = torch.load(path, weights_only=True)
        a = build_timm(name, name, num_classes=len(P.LABELS)).state_dict()
        b = build_timm(name, name, num_classes=len(P.LABELS)).state_dict()
        assert _same_state(saved, a) and _same_state(a, b)
        assert path.stat().st_mtime_ns == mtime
        rnd = build_timm(name, None, num_classes=len(P.LABELS)).state_dict()
        assert not _same_state(saved, rnd)
    saved = torch.load(cache_dir("shapes-clip-tiny") / "weights.pt", weights_only=True)
    assert _same_state(saved, load_clip("shapes-clip-tiny", "shapes-clip-tiny").model.state_dict())


def test_local_file_load(tiny_cache: dict[str, dict], tmp_path: Path) -> None:
    saved = torch.load(cache_dir("shapes-resnet-tiny") / "weights.pt", weights_only=True)
    f = tmp_path / "resnet.pt"
    torch.save(saved, f)
    same = build_timm("shapes-resnet-tiny", str(f), num_classes=len(P.LABELS)).state_dict()
    assert _same_state(saved, same)
    # another head size: the backbone loads, the classifier is new
    other = build_timm("shapes-resnet-tiny", str(f), num_classes=5)
    assert other.fc.weight.shape[0] == 5
    assert _same_state(saved, other.state_dict(), skip=("fc.",))
    # any timm architecture from a local file, and features_only through the same path
    feats = build_timm("resnet18", str(f), layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16, features_only=True)
    assert torch.equal(feats.conv1.weight, saved["conv1.weight"])
    # CLIP from a local file
    c = tmp_path / "clip.pt"
    clip_state = torch.load(cache_dir("shapes-clip-tiny") / "weights.pt", weights_only=True)
    torch.save(clip_state, c)
    assert _same_state(clip_state, load_clip("shapes-clip-tiny", str(c)).model.state_dict())


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown CLIP architecture 'nope'"):
        load_clip("nope", None)
    with pytest.raises(ValueError, match="unknown timm architecture 'nope'"):
        build_timm("nope")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_timm("shapes-swin-tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip("shapes-clip-tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown pretrained tag 'openai'"):
        load_clip("shapes-clip-tiny", "openai")  # the tiny config has no open_clip tags (and no network is used)
    with pytest.raises(ValueError, match="not 'ViT-B-16'"):
        load_clip("ViT-B-16", "shapes-clip-tiny")
    with pytest.raises(ValueError, match="unknown pretrained tag 'bogus'"):
        build_timm("resnet18", "bogus")
    with pytest.raises(ValueError, match="is a CLIP"):
        build_timm("shapes-clip-tiny")
    with pytest.raises(ValueError, match="unknown ShapesWorld backbone"):
        ensure_pretrained("shapes-vgg-tiny")
    # a checkpoint of another architecture is refused with the keys that do not fit
    bad = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="does not fit"):
        load_clip("shapes-clip-tiny", str(bad))


def test_cache_of_another_architecture_is_rebuilt(tiny_cache: dict[str, dict], tmp_path: Path) -> None:
    root = tmp_path / "pretrained"
    src = cache_dir("shapes-resnet-tiny")
    dst = cache_dir("shapes-resnet-tiny", root)
    dst.mkdir(parents=True)
    manifest = json.loads((src / "manifest.json").read_text())
    (dst / "weights.pt").write_bytes((src / "weights.pt").read_bytes())
    (dst / "manifest.json").write_text(json.dumps(manifest))
    assert cache_is_valid("shapes-resnet-tiny", root)
    manifest["arch"]["arch_kwargs"]["stem_width"] = 999
    (dst / "manifest.json").write_text(json.dumps(manifest))
    assert not cache_is_valid("shapes-resnet-tiny", root)


def test_pretraining_is_deterministic_and_cli_uses_the_cache(tiny_cache: dict[str, dict], tmp_path: Path) -> None:
    """The same recipe, seed and data rebuild byte-identical weights; `pretrain --name X` then finds the cache."""
    from common.data.synth.__main__ import main

    name = "shapes-resnet-tiny"
    root = tmp_path / "pretrained"
    rebuilt = P.pretrain(name, budget=1.0, data_budget=DATA_BUDGET, recipe=RECIPES[name], root=root)
    assert rebuilt["weights"]["sha256"] == tiny_cache[name]["weights"]["sha256"]
    assert rebuilt["data"]["fingerprint"] == tiny_cache[name]["data"]["fingerprint"]
    before = (root / name / "manifest.json").read_text()
    assert main(["pretrain", "--name", name, "--out", str(root)]) == 0
    assert (root / name / "manifest.json").read_text() == before  # cached: not rebuilt
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(root)])  # says which backbones to build
