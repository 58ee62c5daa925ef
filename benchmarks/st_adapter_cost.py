"""``python -m benchmarks.st_adapter_cost``: training-step time and peak memory of ST-Adapter vs full fine-tuning vs
the linear probe, same backbone, batch and frames, measured in one invocation and printed as ratios.

Each method runs in its own fresh process (so that peak memory is its own): build the model, make a random batch,
``--warmup`` untimed steps, then ``--steps`` timed steps of forward + cross-entropy + backward + AdamW. Reported:

* step time: the median over the timed steps;
* activation memory: the bytes autograd saves for the backward pass in one step (each storage counted once, weights
  excluded, through ``torch.autograd.graph.saved_tensors_hooks``), exact and device-independent;
* gradient + AdamW state memory: 3 x the trainable parameters' bytes (gradient, two moments);
* peak memory: on CUDA ``max_memory_allocated`` during the steps minus the memory held before the first step;
  on CPU the growth of the process's peak resident set size over its size before the first step (this one
  includes allocator and library caches and is noisy at tiny sizes; the two exact columns above are not).

The default is the tiny ShapesWorld CLIP on the CPU (what every machine has); ``--arch ViT-B-16 --device cuda
--backbone-dtype fp16 --amp`` measures the paper's setting (random weights: cost does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.isolated import run_isolated

METHODS = ("st_adapter", "full_finetune", "linear_probe")


def _rss_mb() -> float:
    """Current resident set size (MiB), from /proc on Linux."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def measure(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    """One method's numbers (runs in the calling process)."""
    import torch
    import torch.nn.functional as F

    from st_adapter.model import build_video_vit

    torch.manual_seed(0)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    device = torch.device(opts["device"])
    model = build_video_vit(opts["arch"], opts["pretrained"], opts["classes"], method,
                            adapter_width=opts["width"], adapter_positions=opts["positions"],
                            backbone_dtype=opts["backbone_dtype"] if method != "full_finetune" else "fp32",
                            grad_checkpointing=opts["grad_checkpointing"]).to(device).train()
    size = int(model.backbone.image_size[0])
    video = torch.randn(opts["batch"], opts["frames"], 3, size, size, device=device)
    label = torch.randint(0, opts["classes"], (opts["batch"],), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(opts["amp"]) if opts["amp"] else None

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(video).float(), label)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    saved: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:  # parameters saved for the backward pass are not activations
            saved[st.data_ptr()] = max(saved.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()  # one extra, untimed step to count what autograd saves
    activations = sum(saved.values()) / 2**20
    states = 3 * sum(p.numel() * p.element_size() for p in params) / 2**20

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _rss_mb()
    for _ in range(opts["warmup"]):
        step()
    times = []
    for _ in range(opts["steps"]):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = _peak_rss_mb() - base
    trainable = sum(p.numel() for p in params)
    return {"method": method, "trainable": trainable, "step_ms": 1000 * statistics.median(times),
            "step_ms_all": [1000 * t for t in times], "activations_mb": activations, "states_mb": states,
            "peak_mb": peak, "image_size": size}


def run_all(opts: dict[str, Any], methods: tuple[str, ...] = METHODS) -> list[dict[str, Any]]:
    """Every method in its own spawned process, one after the other (never concurrently)."""
    return run_isolated(measure, methods, opts, "benchmarks/st_adapter_cost.py", width=14)


def table(results: list[dict[str, Any]]) -> str:
    """Fixed-width table with ratios against full fine-tuning."""
    ref = next(r for r in results if r["method"] == "full_finetune")
    head = (f"{'method':<15} {'trainable':>11} {'step (ms)':>10} {'x FT':>6} {'activ. (MiB)':>12} {'x FT':>6} "
            f"{'grad+opt (MiB)':>14} {'act+grad+opt':>12} {'x FT':>6} {'peak (MiB)':>10} {'x FT':>6}")
    lines = [head, "-" * len(head)]

    def ratio(r: dict[str, Any], key: str) -> float:
        return r[key] / max(ref[key], 1e-9)

    for r in results:
        r["train_state_mb"] = r["activations_mb"] + r["states_mb"]
    for r in results:
        lines.append(f"{r['method']:<15} {r['trainable']:>11,} {r['step_ms']:>10.1f} {ratio(r, 'step_ms'):>6.2f} "
                     f"{r['activations_mb']:>12.1f} {ratio(r, 'activations_mb'):>6.2f} {r['states_mb']:>14.2f} "
                     f"{r['train_state_mb']:>12.1f} {ratio(r, 'train_state_mb'):>6.2f} {r['peak_mb']:>10.1f} "
                     f"{ratio(r, 'peak_mb'):>6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.st_adapter_cost", description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="shapes-clip-tiny", help="open_clip architecture (default shapes-clip-tiny)")
    p.add_argument("--pretrained", default=None, help="weights (default: random; cost does not depend on them)")
    p.add_argument("--placement", choices=["k400", "ssv2"], default="ssv2",
                   help="k400: before the MLP (12x384); ssv2: before attention and the MLP (24x384)")
    p.add_argument("--width", type=int, default=None, help="adapter width (default: ViT width / 2)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--classes", type=int, default=174)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone-dtype", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="dtype of the frozen backbone (ST-Adapter, linear probe)")
    p.add_argument("--amp", default=None, choices=["fp16", "bf16"], help="autocast dtype")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    width = args.width
    if width is None:
        from st_adapter.model import load_visual

        width = int(load_visual(args.arch, None, device="meta").class_embedding.shape[-1]) // 2
    opts = {"arch": args.arch, "pretrained": args.pretrained, "width": width, "batch": args.batch,
            "frames": args.frames, "classes": args.classes, "steps": args.steps, "warmup": args.warmup,
            "device": args.device, "backbone_dtype": args.backbone_dtype, "amp": args.amp,
            "grad_checkpointing": args.grad_checkpointing, "threads": args.threads,
            "positions": ["pre_mlp"] if args.placement == "k400" else ["pre_attn", "pre_mlp"]}
    print(f"ST-Adapter training cost: {args.arch}, {args.placement} placement (width {width}), batch {args.batch} x "
          f"{args.frames} frames, {args.device}, backbone {args.backbone_dtype}, amp {args.amp or 'off'}; "
          f"median of {args.steps} steps after {args.warmup} warm-up steps, each method in a fresh process")
    results = run_all(opts)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"options": opts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
