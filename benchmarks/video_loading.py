"""``python -m benchmarks.video_loading``: decord vs PyAV through the video datamodule, and reader memory over time.

Two measurements on the same files (ShapesWorld videos written by the ``kinetics400`` writer at a realistic frame
size, cached under ``outputs/bench/video_loading/``, or any Kinetics-format ``--root``):

1. **Throughput**: training clips per second through :class:`common.data.kinetics.Kinetics400DataModule`
   (``--frames`` 8 at ``--input-size`` 224, ``--workers`` 2 DataLoader workers, ST-Adapter's K400 augmentation,
   TSN sampling), for each backend, after one warm-up batch; ratio decord / PyAV.
2. **Memory**: resident set size of this process across ``--reads`` 1,000 reads (open, decode 8 TSN frames, close),
   sampled every 100 reads, per backend. Flat (growth well under the size of a few decoded clips) = no leak.

Prints a table and ratios; ``--json FILE`` also writes the figures. Speeds are wall-clock on whatever else the
machine is running: compare the two backends within one run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BACKENDS = ("decord", "pyav")


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def ensure_videos(root: Path, num_videos: int, frames: int, size: int) -> Path:
    """Write the benchmark videos once (2 classes x ``num_videos // 2`` training videos) and reuse them."""
    from common.data.synth.video_writers import write_kinetics400

    marker = root / "bench.json"
    want = {"num_videos": num_videos, "frames": frames, "size": size}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    print(f"[video_loading] writing {num_videos} videos of {frames} frames at {size}p to {root}", flush=True)
    write_kinetics400(root, num_classes=2, num_per_class=max(1, num_videos // 2), val_per_class=1, frames=frames,
                      size=size, overwrite=True)
    marker.write_text(json.dumps(want))
    return root


def throughput(root: Path, backend: str, frames: int, input_size: int, workers: int, batch_size: int,
               batches: int) -> dict[str, float]:
    """Training clips/s through the datamodule's train loader over one epoch of a list that repeats the videos
    (so there is no epoch boundary); the first batch (worker start-up) is not timed."""
    import torch

    from common.data.kinetics import Kinetics400DataModule

    lines = (root / "train.txt").read_text().split("\n")
    lines = [x for x in lines if x.strip()]
    need = (batches + 1) * batch_size
    bench_list = Path(tempfile.mkdtemp(prefix="video-loading-")) / "train.txt"  # never written into the dataset
    bench_list.write_text("\n".join((lines * (need // len(lines) + 1))[:need]) + "\n")
    torch.manual_seed(0)
    dm = Kinetics400DataModule(root=str(root), train_file=str(bench_list), backend=backend, num_frames=frames,
                               input_size=input_size, recipe="short_side_jitter", sampling="segment",
                               num_workers=workers, batch_size=batch_size)
    dm.setup("fit")
    clips, start = 0, None
    for batch in dm.train_dataloader():
        if start is None:
            start = time.perf_counter()
            continue
        clips += batch["video"].shape[0]
    elapsed = time.perf_counter() - start
    return {"clips": clips, "seconds": elapsed, "clips_per_s": clips / elapsed}


def memory(root: Path, backend: str, reads: int, frames: int) -> dict[str, Any]:
    """RSS every 100 reads of ``frames`` TSN-test frames, cycling over the training videos."""
    from common.data.kinetics import Kinetics400DataModule
    from common.data.sampling import SegmentSampler
    from common.data.video import read_clip

    samples = Kinetics400DataModule(root=str(root)).load_split("train")
    sampler = SegmentSampler(frames)
    trace = [_rss_mb()]
    t0 = time.perf_counter()
    for i in range(reads):
        clip, _ = read_clip(samples[i % len(samples)].path, lambda n: sampler.test_indices(n)[0], backend)
        del clip
        if (i + 1) % 100 == 0:
            trace.append(_rss_mb())
    elapsed = time.perf_counter() - t0
    first_block = trace[1]  # after 100 reads: decoders and caches warmed up
    return {
        "rss_mb": [round(x, 1) for x in trace],
        "growth_after_warmup_mb": round(trace[-1] - first_block, 1),
        "reads_per_s_main_process": reads / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video_loading", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None, help="Kinetics-format dataset (default: cached ShapesWorld)")
    p.add_argument("--num-videos", type=int, default=16, help="benchmark videos to write (default 16)")
    p.add_argument("--video-frames", type=int, default=64, help="frames per written video (default 64)")
    p.add_argument("--video-size", type=int, default=256, help="height of the written videos (default 256, 4:3)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--input-size", type=int, default=224, help="crop size (default 224)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=12, help="timed batches per backend (default 12)")
    p.add_argument("--reads", type=int, default=1000, help="reads for the memory trace (default 1000)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    from common.paths import outputs_dir

    root = args.root or ensure_videos(outputs_dir() / "bench" / "video_loading", args.num_videos,
                                      args.video_frames, args.video_size)
    results: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "root": str(root), "cpu_count": os.cpu_count()}
    for backend in BACKENDS:
        print(f"[video_loading] {backend}: throughput ...", flush=True)
        results[backend] = {"throughput": throughput(root, backend, args.frames, args.input_size, args.workers,
                                                     args.batch_size, args.batches)}
        print(f"[video_loading] {backend}: memory over {args.reads} reads ...", flush=True)
        results[backend]["memory"] = memory(root, backend, args.reads, args.frames)

    d, a = results["decord"], results["pyav"]
    print()
    print(f"{'backend':<8} {'clips/s (loader)':>17} {'reads/s (main)':>15} {'RSS start':>10} {'RSS end':>8} "
          f"{'growth after 100':>17}")
    for name, r in (("decord", d), ("pyav", a)):
        m = r["memory"]
        print(f"{name:<8} {r['throughput']['clips_per_s']:>17.2f} {m['reads_per_s_main_process']:>15.1f} "
              f"{m['rss_mb'][0]:>9.0f}M {m['rss_mb'][-1]:>7.0f}M {m['growth_after_warmup_mb']:>16.1f}M")
    ratio = d["throughput"]["clips_per_s"] / a["throughput"]["clips_per_s"]
    ratio_main = d["memory"]["reads_per_s_main_process"] / a["memory"]["reads_per_s_main_process"]
    results["ratios"] = {"decord_over_pyav_loader": ratio, "decord_over_pyav_reads": ratio_main}
    print(f"\ndecord / PyAV: {ratio:.2f}x clips/s through the datamodule, {ratio_main:.2f}x raw reads/s")
    for name, r in (("decord", d), ("pyav", a)):
        trace = r["memory"]["rss_mb"]
        print(f"{name} RSS every 100 reads (MB): {' '.join(f'{x:.0f}' for x in trace)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
