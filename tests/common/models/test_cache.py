"""The pretrained cache refuses a cached weights file that is not what its manifest records (no pretraining here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.checkpoints import CorruptCheckpointError
from common.models import cache
from common.models.registry import get_shapes_model

NAME = "shapes-resnet-tiny"


@pytest.fixture()
def entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache entry as the pretraining writes it (weights.pt + manifest.json with the arch and the sha256)."""
    def no_training(*args: object, **kwargs: object) -> dict:
        raise AssertionError("a corrupt entry must not be retrained silently")

    monkeypatch.setattr(cache, "_TRAINER", no_training)
    d = cache.cache_dir(NAME, tmp_path)
    d.mkdir(parents=True)
    torch.save({f"w{i}": torch.randn(64, 64) for i in range(4)}, d / cache.WEIGHTS_FILE)
    manifest = {"name": NAME, "arch": json.loads(json.dumps(get_shapes_model(NAME).arch_config())),
                "weights": {"file": cache.WEIGHTS_FILE, "sha256": cache.file_sha256(d / cache.WEIGHTS_FILE)}}
    (d / cache.MANIFEST_FILE).write_text(json.dumps(manifest))
    return d


def test_truncated_weights_name_the_file_and_the_fix(entry: Path) -> None:
    root = entry.parent
    wf = entry / cache.WEIGHTS_FILE
    assert cache.ensure_pretrained(NAME, root=root) == wf  # whole: used as is
    data = wf.read_bytes()
    wf.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError) as err:
        cache.ensure_pretrained(NAME, root=root)
    msg = str(err.value)
    assert f"cached pretrained weights {wf}" in msg and "do not match the sha256 recorded in" in msg
    assert "cut short" in msg
    assert f"Delete {entry} and it is rebuilt on the next run" in msg
    assert f"python -m common.data.synth pretrain --name {NAME} --force" in msg


def test_weights_changed_in_place_are_refused_too(entry: Path) -> None:
    wf = entry / cache.WEIGHTS_FILE
    torch.save({"w0": torch.zeros(1)}, wf)  # a whole file, but not the one the manifest describes
    with pytest.raises(CorruptCheckpointError, match="do not match the sha256"):
        cache.ensure_pretrained(NAME, root=entry.parent)


def test_an_old_manifest_without_sha_still_gets_the_zip_check(entry: Path) -> None:
    mf, wf = entry / cache.MANIFEST_FILE, entry / cache.WEIGHTS_FILE
    manifest = json.loads(mf.read_text())
    del manifest["weights"]
    mf.write_text(json.dumps(manifest))
    assert cache.ensure_pretrained(NAME, root=entry.parent) == wf
    wf.write_bytes(wf.read_bytes()[:1000])
    with pytest.raises(CorruptCheckpointError, match=rf"(?s)cached pretrained weights {wf} cannot be read.*Delete"):
        cache.ensure_pretrained(NAME, root=entry.parent)
