"""`python -m vificlip classify`: top-5 per video from a checkpoint, the evaluation's views, per-file errors."""

from __future__ import annotations

import io

import numpy as np
import torch

from common.data.synth.video_writers import write_video
from vificlip.classify import classify, load_classifier, main, video_views
from vificlip.module import ViFiCLIPModule

CLASSES = ["red circle", "blue square", "green triangle", "yellow star", "purple hexagon", "orange ring"]


def test_classify_prints_top5_from_a_checkpoint_and_reports_bad_files(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    trained = ViFiCLIPModule(method="vificlip", arch="shapes-clip-tiny", pretrained=None,
                             data_info={"num_classes": 3, "class_names": CLASSES[:3]})
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}, ckpt)
    rng = np.random.default_rng(0)
    video = tmp_path / "clip.mp4"
    write_video(video, [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(12)], 8, "h264")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")

    code = main([str(video), str(tmp_path / "missing.mp4"), str(broken), "--classes", ",".join(CLASSES),
                 "--ckpt", str(ckpt), "--frames", "4", "--backend", "pyav"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == str(video) and len(lines) == 6  # the video, then its top-5 classes
    probs = [float(ln.split()[-1]) for ln in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-4
    assert "missing.mp4: error" in err and "broken.mp4: error" in err

    # the checkpoint's weights and the evaluation's views: the same probabilities as the module gives
    module = load_classifier(CLASSES, str(ckpt))
    torch.testing.assert_close(module.model.clip.visual.conv1.weight, trained.model.clip.visual.conv1.weight)
    assert module.model.text_head.prompts() == [[f"a photo of a {c}." for c in CLASSES]]
    views = video_views(str(video), 4, 64, clips=2, crops=1, backend="pyav", normalize="clip")
    assert views.shape == (2, 4, 3, 64, 64)
    buf = io.StringIO()
    assert classify(module, [str(video)], num_frames=4, clips=2, backend="pyav", top_k=6, out=buf) == 0
    with torch.no_grad():
        expected = module.view_probabilities(views.unsqueeze(0))[0]
    printed = {ln.split(". ", 1)[1].rsplit(" ", 1)[0].strip(): float(ln.split()[-1])
               for ln in buf.getvalue().splitlines()[1:]}
    for name, p in zip(CLASSES, expected.tolist()):
        assert abs(printed[name] - p) < 1e-4
