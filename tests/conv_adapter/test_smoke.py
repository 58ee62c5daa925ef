"""A Conv-Adapter smoke config runs on its own through ``common.cli.run`` on the ShapesWorld VTAB-like data and logs
val/acc1; every smoke / tiny config names the tiny backbones and the image-classification datamodule."""

from __future__ import annotations

from pathlib import Path

import yaml

from common.cli import run
from common.data.synth.vtab import write_vtab_like
from conv_adapter.configs.generate import HERE

SMOKE = HERE / "smoke" / "resnet-tiny" / "conv_parallel.yaml"


def test_smoke_fit_logs_val_acc1(tmp_path: Path, mlflow_store, monkeypatch):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    root = write_vtab_like(tmp_path / "vtab-like", tasks=("shape",), num_train=16, num_val=16, num_test=4, size=64,
                           shots=(1,))
    summary = run(["fit", "--config", str(SMOKE), "--data.init_args.root", str(root)])
    metrics = summary["metrics"] if "metrics" in summary else summary
    acc = {k: v for k, v in metrics.items() if k == "val/acc1"}
    assert acc and 0.0 <= float(acc["val/acc1"]) <= 1.0 + 1e-6, summary


def test_smoke_and_tiny_configs_use_the_tiny_backbones_on_shapesworld():
    for preset in ("smoke", "tiny"):
        paths = sorted((HERE / preset).rglob("*.yaml"))
        assert len(paths) == 2 * 7, preset  # two tiny backbones x seven methods (no VPT: a Swin baseline)
        for path in paths:
            cfg = yaml.safe_load(path.read_text())
            init = cfg["model"]["init_args"]
            assert init["backbone"] in ("shapes-resnet-tiny", "shapes-convnext-tiny")
            assert init["pretrained"] == (None if preset == "smoke" else init["backbone"])
            data = cfg["data"]["init_args"]
            assert cfg["data"]["class_path"].endswith("ImageClassificationDataModule")
            assert data["root"] is None and data["task"] == "shape" and data["image_size"] == 64
