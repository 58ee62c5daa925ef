"""Shared fixtures of the data tests: tiny ShapesWorld Kinetics-400 and SSv2 sets (written once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.data.synth.__main__ import main as synth_main
from common.data.synth.video_writers import write_kinetics400

SIZE = 32  # frame height written; width 4/3 -> 42
K400_CLASSES = 4


@pytest.fixture(scope="session")
def k400(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k400") / "kinetics400"
    return write_kinetics400(root, num_classes=K400_CLASSES, num_per_class=3, val_per_class=2, frames=8,
                             size=SIZE, seed=0, progress=False)


@pytest.fixture(scope="session")
def ssv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ssv2") / "ssv2"
    # through the command line, as a user would
    assert synth_main(["ssv2", "--out", str(root), "--num-per-class", "2", "--val-per-class", "1", "--frames", "8",
                       "--size", str(SIZE)]) == 0
    return root


