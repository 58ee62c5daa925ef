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


def test_python_m_vificlip_classify_on_shapesworld_videos(tmp_path) -> None:
    """The command a user types: two ShapesWorld Kinetics videos and an undecodable file. Each video prints its
    top-5 (here every class: the five probabilities sum to 1, most probable first); the broken file is one error
    line on stderr naming it, the others still print, exit status 1."""
    import subprocess
    import sys

    from common.data.synth.video_writers import write_kinetics400
    from common.paths import project_root

    root = write_kinetics400(tmp_path / "k400", num_classes=5, num_per_class=1, val_per_class=1, frames=8, size=32,
                             progress=False)
    videos = [str(root / ln.split()[0]) for ln in (root / "val.txt").read_text().split("\n")[:2]]
    names = [ln.split(",", 1)[1] for ln in (root / "labels.csv").read_text().splitlines()[1:]]
    torch.manual_seed(0)
    trained = ViFiCLIPModule(method="vificlip", arch="shapes-clip-tiny", pretrained=None,
                             data_info={"num_classes": 5, "class_names": names})
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}, ckpt)
    broken = tmp_path / "cut.mp4"
    broken.write_bytes((root / videos[0]).read_bytes()[:200])  # a cut-off mp4
    proc = subprocess.run([sys.executable, "-m", "vificlip", "classify", videos[0], str(broken), videos[1],
                           "--classes", ",".join(names), "--ckpt", str(ckpt), "--frames", "4", "--backend", "pyav"],
                          cwd=project_root(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert [lines[0], lines[6]] == videos and len(lines) == 12
    for block in (lines[1:6], lines[7:12]):
        printed = [ln.split(". ", 1)[1].rsplit(" ", 1) for ln in block]
        probs = [float(p) for _, p in printed]
        assert sorted(n.strip() for n, _ in printed) == sorted(names)
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1.0) < 2e-3  # 4 decimals, 5 classes
    errors = [ln for ln in proc.stderr.splitlines() if ": error:" in ln]
    assert len(errors) == 1 and errors[0].startswith(f"{broken}: error:")
