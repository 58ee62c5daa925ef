"""``python -m benchmarks.polyhistor_cost``: training-step time and memory of the hypernetwork rows of the Polyhistor
table (Hyperformer, Polyhistor, Polyhistor-Lite) relative to the plain Adapter row, measured in one invocation.

Paper scale by default: timm ``swin_tiny_patch4_window7_224`` at 448 px (random weights: cost does not depend on
them), the four PASCAL-Context tasks with their SegFormer decoders (E = 256) and losses, batch 4, the PEFT shapes
of ``polyhistor.encoder.PeftConfig`` (the rows of ``python -m benchmarks.params polyhistor``). Each row runs in its
own fresh process: build, random batch and targets, ``--warmup`` untimed steps, then ``--steps`` timed steps of
forward (every task) + weighted losses + backward + AdamW. The hypernetwork rows generate every task's and layer's
adapter weights once per step (``MultiTaskSwin.forward_stacked``); ``gen ms`` times that generation alone
(forward, no backward), so its share of a step is visible. Reported per row:

* step time: the median over the timed steps;
* activations: the bytes autograd saves for the backward pass in one step (each storage once, parameters
  excluded, through ``torch.autograd.graph.saved_tensors_hooks``): exact and device-independent;
* gradient + AdamW state: 3 x the trainable parameters' bytes;
* peak: on CUDA ``max_memory_allocated`` during the steps minus the memory held before them; on CPU the growth of
  the process's peak resident set size over its size before the first step (includes allocator caches: noisy).

Ratios are against the Adapter row. ``--size 64 --backbone shapes-swin-tiny`` gives a quick look on any laptop.
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

METHODS = ("adapter", "hyperformer", "polyhistor", "polyhistor_lite")


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _batch(opts: dict[str, Any], device: Any) -> tuple[Any, dict[str, Any]]:
    import torch

    from polyhistor.network import PASCAL_OUTPUTS

    b, s = opts["batch"], opts["size"]
    images = torch.randn(b, 3, s, s, device=device)
    normals = torch.nn.functional.normalize(torch.randn(b, 3, s, s, device=device), dim=1)
    targets = {"semseg": torch.randint(0, PASCAL_OUTPUTS["semseg"], (b, s, s), device=device),
               "human_parts": torch.randint(0, PASCAL_OUTPUTS["human_parts"], (b, s, s), device=device),
               "sal": torch.randint(0, 2, (b, s, s), device=device), "normals": normals}
    return images, targets


def measure(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    """One row's numbers (runs in the calling process)."""
    import torch

    from polyhistor.losses import weighted_losses
    from polyhistor.module import build_backbone
    from polyhistor.network import PASCAL_OUTPUTS, build_network

    torch.manual_seed(0)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    device = torch.device(opts["device"])
    swin = build_backbone(opts["backbone"], None, {"img_size": (opts["size"], opts["size"])})
    net = build_network(swin, method, list(PASCAL_OUTPUTS), PASCAL_OUTPUTS, None, opts["decoder"]).to(device).train()
    images, targets = _batch(opts, device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts["amp"]) if opts["amp"] else None

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            preds = net(images)
        loss = sum(weighted_losses({t: p.float() for t, p in preds.items()}, targets).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    saved: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            saved[st.data_ptr()] = max(saved.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()  # one untimed step to count what autograd saves
    activations = sum(saved.values()) / 2**20
    states = 3 * sum(p.numel() * p.element_size() for p in params) / 2**20

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        sync()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _rss_mb()
    bank = net.encoder.bank
    calls_before = bank.calls if bank is not None else 0
    for _ in range(opts["warmup"]):
        step()
    times = []
    for _ in range(opts["steps"]):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else _peak_rss_mb() - base
    gen_ms, gen_calls = 0.0, 0
    if bank is not None:
        gen_calls = (bank.calls - calls_before) / (opts["warmup"] + opts["steps"])
        ids = list(range(len(net.encoder.tasks)))
        gen_times = []
        with torch.no_grad():
            for _ in range(max(3, opts["steps"])):
                sync()
                t0 = time.perf_counter()
                bank.per_slot(ids)
                sync()
                gen_times.append(time.perf_counter() - t0)
        gen_ms = 1000 * statistics.median(gen_times)
    return {"method": method, "trainable": sum(p.numel() for p in params), "step_ms": 1000 * statistics.median(times),
            "step_ms_all": [1000 * t for t in times], "gen_ms": gen_ms, "generations_per_step": gen_calls,
            "activations_mb": activations, "states_mb": states, "peak_mb": peak}


def run_all(opts: dict[str, Any], methods: tuple[str, ...] = METHODS) -> list[dict[str, Any]]:
    """Every row in its own spawned process, one after the other (never concurrently)."""
    return run_isolated(measure, methods, opts, "benchmarks/polyhistor_cost.py", width=16)


def table(results: list[dict[str, Any]]) -> str:
    """Fixed-width table with ratios against the Adapter row."""
    ref = next(r for r in results if r["method"] == "adapter")
    head = (f"{'row':<16} {'trainable':>11} {'step (ms)':>10} {'x Ad':>6} {'gen (ms)':>9} {'gen/step':>8} "
            f"{'activ. (MiB)':>12} {'x Ad':>6} {'grad+opt (MiB)':>14} {'peak (MiB)':>10} {'x Ad':>6}")
    lines = [head, "-" * len(head)]

    def ratio(r: dict[str, Any], key: str) -> float:
        return r[key] / max(ref[key], 1e-9)

    for r in results:
        lines.append(f"{r['method']:<16} {r['trainable']:>11,} {r['step_ms']:>10.1f} {ratio(r, 'step_ms'):>6.2f} "
                     f"{r['gen_ms']:>9.1f} {r['generations_per_step']:>8.0f} {r['activations_mb']:>12.1f} "
                     f"{ratio(r, 'activations_mb'):>6.2f} {r['states_mb']:>14.1f} {r['peak_mb']:>10.1f} "
                     f"{ratio(r, 'peak_mb'):>6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.polyhistor_cost", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="swin_tiny_patch4_window7_224", help="timm Swin (random weights)")
    p.add_argument("--size", type=int, default=448, help="image size (default 448, MTLoRA's)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--decoder", type=int, default=256, help="SegFormer decoder embed dim")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None, choices=["fp16", "bf16"], help="autocast dtype")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--methods", default=",".join(METHODS), help="rows, comma-separated (adapter is the reference)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    if "adapter" not in methods:
        methods = ("adapter", *methods)
    opts = {k: getattr(args, k) for k in ("backbone", "size", "batch", "decoder", "steps", "warmup", "device", "amp",
                                          "threads")}
    print(f"Polyhistor table, training cost: {args.backbone} at {args.size} px, batch {args.batch}, 4 tasks, "
          f"{args.device}, amp {args.amp or 'off'}; median of {args.steps} steps after {args.warmup} warm-up "
          "step(s), each row in a fresh process; ratios x the Adapter row")
    results = run_all(opts, methods)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"options": opts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
