"""The generated ViFi-CLIP configs: up to date, the official recipe at paper scale, parseable, and a smoke fit through
the CLI that logs val/acc1 (plus a zero-shot validate)."""

from __future__ import annotations

import pytest
import yaml

from common.cli import main, run
from vificlip.configs.generate import HERE, render, settings

SMALL_SET = "{num_classes: 4, num_per_class: 2, val_per_class: 1, frames: 8}"


def test_generated_files_match_the_generator() -> None:
    expected = {s.path: render(s) for s in settings()}
    on_disk = set(HERE.rglob("*.yaml"))
    assert on_disk == set(expected), "run `python -m vificlip.configs.generate` (stale or extra files)"
    stale = [str(p.relative_to(HERE)) for p, text in expected.items() if p.read_text() != text]
    assert not stale, f"stale configs (run python -m vificlip.configs.generate): {stale}"


def _load(rel: str) -> dict:
    return yaml.safe_load((HERE / rel).read_text())


def test_paper_settings_follow_the_official_recipe() -> None:
    full = _load("paper/k400/vit-b16_16f_vificlip.yaml")
    m, d, t = full["model"]["init_args"], full["data"]["init_args"], full["trainer"]
    assert (m["method"], m["arch"], m["pretrained"], m["lr"], m["weight_decay"]) == \
        ("vificlip", "ViT-B-16", "openai", 2.2e-5, 0.001)
    assert m["betas"] == [0.9, 0.98] and m["eps"] == 1e-8 and m["warmup_epochs"] == 5 and m["min_lr_ratio"] == 0.01
    assert (m["mixup_alpha"], m["cutmix_alpha"], m["mixup_switch_prob"], m["label_smoothing"]) == (0.8, 1.0, 0.5, 0.1)
    assert d["batch_size"] * t["devices"] * t["accumulate_grad_batches"] == 512 and t["max_epochs"] == 30
    assert (d["num_frames"], d["sampling"], d["segment_style"], d["recipe"], d["input_size"]) == \
        (16, "segment", "tsn", "multiscale_crop", 224)
    assert (d["test_clips"], d["test_crops"]) == (4, 3)
    zs = _load("paper/k400/vit-b16_32f_zs-train-vificlip.yaml")
    assert zs["model"]["init_args"]["lr"] == 8e-6 and zs["trainer"]["max_epochs"] == 10
    assert zs["data"]["init_args"]["num_frames"] == 32
    assert zs["data"]["init_args"]["batch_size"] * 8 * zs["trainer"]["accumulate_grad_batches"] == 256
    b2n = _load("paper/ucf101/vit-b16_32f_b2n-prompting.yaml")["model"]["init_args"]
    assert (b2n["n_ctx_vision"], b2n["n_ctx_text"], b2n["prompt_depth_vision"], b2n["prompt_depth_text"],
            b2n["lr"]) == (16, 16, 9, 9, 4e-2)
    fs = _load("paper/hmdb51/vit-b16_32f_k8-prompting.yaml")["model"]["init_args"]
    assert (fs["n_ctx_vision"], fs["prompt_depth_vision"], fs["lr"]) == (10, 12, 8e-3)
    assert _load("paper/k400/vit-b16_16f_zero-shot.yaml")["model"]["init_args"]["templates"] == ["{}"]


@pytest.mark.parametrize("rel", ["paper/ssv2/vit-b16_32f_b2n-prompting.yaml", "tiny/k400/clip-tiny_8f_image-ft.yaml"])
def test_cli_parses_the_config(rel: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(HERE / rel), "--print_config"])
    assert ex.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "vificlip.module.ViFiCLIPModule"
    assert printed["model"]["init_args"]["method"] == _load(rel)["model"]["init_args"]["method"]


def test_smoke_fit_and_zero_shot_validate_through_the_cli() -> None:
    small = ["--data.init_args.synth_options", SMALL_SET]
    summary = run(["fit", "--config", str(HERE / "smoke/k400/clip-tiny_4f_vificlip.yaml"), *small],
                  prog="python -m vificlip")
    metrics = summary["metrics"]
    assert "val/acc1" in metrics and 0.0 <= metrics["val/acc1"] <= 1.0
    assert summary["global_step"] == 2
    summary = run(["validate", "--config", str(HERE / "smoke/k400/clip-tiny_4f_zero-shot.yaml"), *small],
                  prog="python -m vificlip")
    assert "val/acc1" in summary["metrics"]


@pytest.mark.parametrize("ds, prefix", [("k400", "kinetics_400"), ("hmdb51", "hmdb_51"), ("ucf101", "ucf_101"),
                                        ("ssv2", "ssv2_174")])
def test_paper_base_to_novel_configs_name_the_base_classes(tmp_path, ds: str, prefix: str) -> None:
    """The published ``fs_base_s<seed>_train.txt`` labels index ``<prefix>_base_labels.csv``, not the dataset's full
    class CSV: the paper b2n configs read the base CSV (fit / validate on base), and no test split that would score
    the novel videos against the base names."""
    import importlib

    (tmp_path / "labels.csv").write_text("id,name\n0,archery\n1,bowling\n2,juggling\n3,surfing\n")
    (tmp_path / f"{prefix}_base_labels.csv").write_text("id,name\n0,juggling\n1,archery\n")
    for stem in ("fs_base_s1_train", "base_val"):
        (tmp_path / f"{stem}.txt").write_text("a.mp4 0\nb.mp4 1\n")
    for method in ("vificlip", "image-ft", "text-ft", "prompting", "zero-shot"):
        cfg = _load(f"paper/{ds}/vit-b16_32f_b2n-{method}.yaml")["data"]
        args = {**cfg["init_args"], "root": str(tmp_path)}
        assert "test_file" not in args and args["class_file"] == f"{prefix}_base_labels.csv"
        module, _, name = cfg["class_path"].rpartition(".")
        dm = getattr(importlib.import_module(module), name)(**args)
        assert list(dm.class_names) == ["juggling", "archery"]


def test_paper_evaluation_configs_read_the_official_lists_and_label_csvs() -> None:
    """The file names of the official configs (``datasets_splits/...`` lists, ``labels/...`` CSVs), read from the
    dataset's root: cross-dataset zero-shot split 1 of HMDB-51 / UCF-101 / K600 (trained model and vanilla CLIP),
    the few-shot evaluation on the full test list, Kinetics-400's full class CSV."""
    expected = {"hmdb51": ("val1.txt", "hmdb_51_labels.csv"), "ucf101": ("val1.txt", "ucf_101_labels.csv"),
                "k600": ("ZS_split1_K600_eval.txt", "ZS_split1_K600.csv")}
    for ds, (val, labels) in expected.items():
        for method in ("vificlip", "zero-shot"):
            cfg = _load(f"paper/{ds}/vit-b16_32f_zs-eval-{method}.yaml")
            d = cfg["data"]["init_args"]
            assert (d["val_file"], d["class_file"], d["num_frames"]) == (val, labels, 32)
            assert cfg["model"]["init_args"]["method"] == method.replace("-", "_")
    assert _load("paper/k600/vit-b16_32f_zs-eval-zero-shot.yaml")["model"]["init_args"]["templates"] == ["{}"]
    few = {"hmdb51": ("val1.txt", "hmdb_51_labels.csv"), "ucf101": ("val1.txt", "ucf_101_labels.csv"),
           "ssv2": ("validation.txt", "ssv2_labels.csv")}
    for ds, (val, labels) in few.items():
        for k in (2, 4, 8, 16):
            for method, lr in (("prompting", 8e-3), ("vificlip", 2e-6)):  # finetuning_few_shot: lr 2e-6, 50 epochs
                cfg = _load(f"paper/{ds}/vit-b16_32f_k{k}-{method}.yaml")
                d, m = cfg["data"]["init_args"], cfg["model"]["init_args"]
                assert (d["train_file"], d["val_file"], d["class_file"]) == (f"train1_few_shot_{k}.txt", val, labels)
                assert (m["method"], m["lr"], cfg["trainer"]["max_epochs"]) == (method, lr, 50)
                assert d["batch_size"] * 8 * cfg["trainer"]["accumulate_grad_batches"] == 64
    for stem in ("16f_vificlip", "16f_image-ft", "16f_text-ft", "16f_zero-shot", "32f_zs-train-vificlip"):
        assert _load(f"paper/k400/vit-b16_{stem}.yaml")["data"]["init_args"]["class_file"] == "kinetics_400_labels.csv"
