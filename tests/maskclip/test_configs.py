"""The generated MaskCLIP configs: up to date with the generator, the official recipe at paper scale, the tiny knobs
only in the tiny / smoke files, and parseable by the CLI."""

from __future__ import annotations

import pytest
import yaml

from common.cli import main
from maskclip.configs.generate import HERE, path, render, settings


def test_generated_files_match_the_generator() -> None:
    expected = {path(p, n): render(p, n) for p, n in settings()}
    assert set(HERE.rglob("*.yaml")) == set(expected), "run `python -m maskclip.configs.generate` (stale or extra)"
    stale = [str(p.relative_to(HERE)) for p, text in expected.items() if p.read_text() != text]
    assert not stale, f"stale configs (run python -m maskclip.configs.generate): {stale}"


def _load(rel: str) -> dict:
    return yaml.safe_load((HERE / rel).read_text())


def test_paper_preset_is_the_official_recipe() -> None:
    cfg = _load("paper/maskclip.yaml")
    m, d, t = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    assert (m["clip_arch"], m["clip_pretrained"], m["rma_blocks"]) == ("ViT-L-14-336", "openai", None)
    assert (m["lr"], m["weight_decay"], m["warmup_steps"]) == (1e-4, 0.05, 10)
    assert (m["class_weight"], m["mask_weight"], m["dice_weight"], m["no_object_weight"]) == (2.0, 5.0, 5.0, 0.0)
    assert (m["num_points"], m["oversample_ratio"], m["importance_sample_ratio"]) == (12544, 3.0, 0.75)
    assert (m["object_threshold"], m["overlap_threshold"], m["temperature"]) == (0.5, 0.5, 0.01)
    assert t["max_steps"] == 10000 and d["batch_size"] * t["devices"] == 8 and t["precision"] == "16-mixed"
    assert (t["gradient_clip_val"], t["gradient_clip_algorithm"]) == (0.01, "norm")
    assert (d["crop_size"], d["scale_range"], d["train_classes"]) == (1024, [0.1, 2.0], "all")
    ade = _load("paper/ade20k150_maskclip.yaml")
    assert ade["model"]["init_args"]["object_threshold"] == 0.3 and ade["data"]["init_args"]["eval_short_side"] == 640
    for method in ("no_rma", "crop_classify"):
        assert _load(f"paper/{method}.yaml")["model"]["init_args"]["method"] == method
    tiny = _load("tiny/maskclip.yaml")
    assert tiny["model"]["init_args"]["rma_blocks"] == [1, 3] and tiny["data"]["init_args"]["train_classes"] == "base"
    assert tiny["model"]["init_args"]["proposals"] == "shapes-mask2former-tiny"
    assert all("shapes" not in str(v) for v in cfg["model"]["init_args"].values())


@pytest.mark.parametrize("rel", ["paper/maskclip.yaml", "tiny/crop_classify.yaml", "paper/ade20k150_no_rma.yaml"])
def test_cli_parses_the_config(rel: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(HERE / rel), "--print_config"])
    assert ex.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "maskclip.module.MaskCLIPModule"
    assert printed["model"]["init_args"]["method"] == _load(rel)["model"]["init_args"]["method"]
