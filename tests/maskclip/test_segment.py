"""`python -m maskclip segment`: three files per image (COCO panoptic PNG whose ids are the JSON's segments, the
segments JSON with the user's class names, an overlay picture), a broken or missing input reported by name while the
other images are still segmented."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.metrics.panoptic import rgb2id
from maskclip.segment import class_info, main

CLASSES = "circle,square,grass,sky"


def test_segment_writes_three_files_per_image_and_reports_a_broken_one(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for name, (h, w) in (("beach", (48, 64)), ("field", (64, 64))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{name}.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    # random tiny CLIP and proposals (a pipeline check): every proposal kept, so that there are segments
    code = main([str(images / "beach.png"), str(images / "broken.jpg"), str(images / "field.png"),
                 str(tmp_path / "missing.png"), "--classes", CLASSES, "--stuff", "grass,sky", "--out", str(out),
                 "--clip-pretrained", "none", "--proposals", "none", "--object-threshold", "0", "--overlap-threshold", "0"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{images / 'broken.jpg'}: error: not a readable image" in captured.err
    assert f"{tmp_path / 'missing.png'}: error: no such file" in captured.err
    assert "beach.png" in captured.out and "field.png" in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}_{kind}" for n in ("beach", "field") for kind in ("panoptic.png", "segments.json", "overlay.png"))
    names = CLASSES.split(",")
    for stem, size in (("beach", (48, 64)), ("field", (64, 64))):
        ids = rgb2id(np.asarray(Image.open(out / f"{stem}_panoptic.png").convert("RGB")))
        assert ids.shape == size  # at the input's own size
        doc = json.loads((out / f"{stem}_segments.json").read_text())
        segs = doc["segments_info"]
        assert segs and set(np.unique(ids)) - {0} == {s["id"] for s in segs}
        for s in segs:
            assert s["category_name"] == names[s["category_id"]]
            assert s["area"] == int((ids == s["id"]).sum())
            assert s["isthing"] == int(names[s["category_id"]] not in ("grass", "sky"))
        assert [c["name"] for c in doc["categories"]] == names
        overlay = Image.open(out / f"{stem}_overlay.png")
        panel_h = overlay.height - 16  # under a 16 px title row
        assert panel_h >= 256 and overlay.width >= 2 * panel_h * size[1] / size[0]  # input | prediction


def test_class_list_checks() -> None:
    info = class_info(["cat", "grass"], ["grass"])
    assert info["is_thing"] == [True, False] and info["eval_classes"] == [0, 1]
    with pytest.raises(ValueError, match="not in --classes"):
        class_info(["cat"], ["sky"])
    err = io.StringIO()
    with pytest.raises(SystemExit):
        import contextlib

        with contextlib.redirect_stderr(err):
            main(["x.png", "--classes", " , "])
    assert "--classes names no class" in err.getvalue()
