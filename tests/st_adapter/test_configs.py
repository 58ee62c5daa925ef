"""The generated ST-Adapter configs: up to date, parseable by the CLI, faithful to the official recipe."""

from __future__ import annotations

import pytest
import yaml

from common.cli import main
from st_adapter.configs.generate import HERE, render, settings


def test_generated_files_match_the_generator() -> None:
    expected = {s.path: render(s) for s in settings()}
    on_disk = set(HERE.rglob("*.yaml"))
    assert on_disk == set(expected), "run `python -m st_adapter.configs.generate` (stale or extra files)"
    stale = [str(p.relative_to(HERE)) for p, text in expected.items() if p.read_text() != text]
    assert not stale, f"stale configs (run python -m st_adapter.configs.generate): {stale}"


def test_paper_settings_follow_the_official_recipe() -> None:
    by_path = {str(s.path.relative_to(HERE)): yaml.safe_load(s.path.read_text()) for s in settings()}
    k400 = by_path["paper/k400/vit-b16_8f_12x384.yaml"]
    ssv2 = by_path["paper/ssv2/vit-b16_8f_24x384.yaml"]
    for cfg in (k400, ssv2):
        m = cfg["model"]["init_args"]
        assert (m["arch"], m["pretrained"], m["adapter_width"], m["base_lr"], m["weight_decay"]) == \
            ("ViT-B-16", "openai", 384, 1e-3, 0.01)
        assert m["adapter_kernel_size"] == [3, 1, 1] and m["adapter_activation"] is None and m["dropout"] == 0.5
        assert m["backbone_dtype"] == "fp16" and m["warmup_epochs"] == 2
        assert cfg["data"]["init_args"]["input_size"] == 224 and cfg["data"]["init_args"]["num_frames"] == 8
    assert k400["model"]["init_args"]["adapter_positions"] == ["pre_mlp"]
    assert ssv2["model"]["init_args"]["adapter_positions"] == ["pre_attn", "pre_mlp"]
    kd, sd = k400["data"]["init_args"], ssv2["data"]["init_args"]
    assert (kd["sampling"], kd["frame_interval"], kd["recipe"], kd["test_crops"], kd["test_clips"]) == \
        ("dense", 16, "short_side_jitter", 1, 3)
    assert (sd["sampling"], sd["segment_style"], sd["recipe"], sd["test_crops"], sd["test_clips"]) == \
        ("segment", "uniform", "randaugment_noflip", 3, 1)
    assert k400["trainer"]["max_epochs"] == 12 and ssv2["trainer"]["max_epochs"] == 50
    # ViT-L/14 and 32 frames exist for both datasets
    for name in ("paper/k400/vit-l14_8f_24x384.yaml", "paper/k400/vit-l14_32f_24x384.yaml",
                 "paper/ssv2/vit-l14_32f_48x384.yaml", "paper/ssv2/vit-b16_32f_24x384.yaml"):
        assert name in by_path
    # presets differ only where they must: the tiny rows share method/placement with the paper rows
    tiny = by_path["tiny/ssv2/clip-tiny_8f_8x32.yaml"]["model"]["init_args"]
    assert tiny["adapter_positions"] == ["pre_attn", "pre_mlp"] and tiny["pretrained"] == "shapes-clip-tiny"


@pytest.mark.parametrize("rel", ["paper/ssv2/vit-l14_32f_48x384.yaml", "tiny/k400/clip-tiny_8f_full-finetune.yaml",
                                 "smoke/ssv2/clip-tiny_4f_8x32.yaml"])
def test_cli_parses_the_config(rel: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(HERE / rel), "--print_config"])
    assert ex.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "st_adapter.module.STAdapterModule"
    assert printed["model"]["init_args"]["method"] == yaml.safe_load((HERE / rel).read_text())["model"]["init_args"]["method"]
