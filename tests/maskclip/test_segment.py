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


def test_segment_with_a_checkpoint_predicts_as_the_trained_module(tmp_path: Path, capsys) -> None:
    """A checkpoint written by a fit (one step, random-init tiny model) segments exactly as the module it saved."""
    import lightning.pytorch as pl
    import torch

    from common.data.coco_panoptic import COCOPanopticDataModule
    from common.data.synth.coco_panoptic import write_coco_panoptic
    from maskclip.module import MaskCLIPModule
    from maskclip.segment import load_segmenter

    root = tmp_path / "coco"
    write_coco_panoptic(root, num_train=4, num_val=2, size=64, progress=False)
    dm = COCOPanopticDataModule(str(root), synth_if_missing=False, train_classes="base", batch_size=2)
    dm.setup("fit")
    torch.manual_seed(0)
    m = MaskCLIPModule(dm.info, clip_pretrained=None, proposals=None, rma_blocks=[1, 3], num_points=64,
                       lr=1e-2, warmup_steps=0, object_threshold=0.0, overlap_threshold=0.0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(m, datamodule=dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    assert main([str(tmp_path / "x.png"), "--classes", CLASSES, "--ckpt", str(ckpt), "--out", str(tmp_path / "o")]) == 0
    loaded = load_segmenter(CLASSES.split(","), ckpt=str(ckpt))
    trained = {k: v for k, v in m.state_dict().items() if ".rma." in k}
    assert trained and all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.items())
    m.eval()
    m.data_info = loaded.data_info  # the user's classes
    m._names_for = None
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    want = m.predict_panoptic(x, [(64, 64)], [(64, 64)])[0]
    doc = json.loads((tmp_path / "o" / "x_segments.json").read_text())
    assert [(s["id"], s["category_id"]) for s in doc["segments_info"]] == \
        [(s["id"], s["category_id"]) for s in want["segments_info"]]
    ids = rgb2id(np.asarray(Image.open(tmp_path / "o" / "x_panoptic.png").convert("RGB")))
    assert np.array_equal(ids, want["panoptic"].numpy())
