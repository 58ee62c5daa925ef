"""``python -m benchmarks.maskclip_cost``: classifying Q proposals with mask class tokens in one ViT pass vs
crop-and-classify (one CLIP pass per proposal), same CLIP, same image, measured in one invocation as ratios.

Rows (median wall time over ``--repeats`` after one warm-up, inference, batch of one image, random weights: cost does
not depend on them): a plain CLIP pass; the mask-token pass without RMA; with RMA (every sixth block); crop-and-classify
(``Q`` crops through CLIP, ``--chunk`` at a time). Ratios are against the mask-token pass with RMA.

CPU timings use ``--threads`` threads (default 1: on a busy 2-core machine two threads mostly time the contention).

Refinement memory: RMA's naive refinement holds ``B x Q x P x D`` features per block (225 MiB per image at
ViT-L/14@336, fp32); computed over chunks of proposals it holds ``chunk / Q`` of that. Reported: the feature buffer's
bytes (exact, by shape) naive and chunked, the measured peak on CUDA (``max_memory_allocated`` around one refinement),
and the largest difference between the two outputs.

Examples: ``python -m benchmarks.maskclip_cost`` (ViT-B/16, 100 proposals, CPU);
``--arch ViT-L-14-336 --device cuda``; ``--arch shapes-clip-tiny --proposals 8 --repeats 1`` (seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch


def _median_time(fn, repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def refinement_memory(rma: Any, q: int, grid: tuple[int, int], chunk: int, device: torch.device) -> dict[str, Any]:
    """Naive vs chunked refinement: feature-buffer bytes by shape, CUDA peaks, max |difference|."""
    d = rma.width
    p = grid[0] * grid[1]
    torch.manual_seed(0)
    queries = torch.randn(1, q, d, device=device)
    keys = torch.randn(1, p, d, device=device)
    out: dict[str, Any] = {"naive_feature_mib": q * p * d * 4 / 2**20,
                           "chunked_feature_mib": min(chunk, q) * p * d * 4 / 2**20, "chunk": chunk}
    results = {}
    for name, c in (("naive", None), ("chunked", chunk)):
        rma.refine_chunk = c
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            results[name] = rma.refinement(queries, keys, grid)
        if device.type == "cuda":
            torch.cuda.synchronize()
            out[f"{name}_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    out["max_abs_diff"] = float((results["naive"] - results["chunked"]).abs().max())
    rma.refine_chunk = None
    return out


def measure(arch: str, proposals: int, repeats: int, chunk: int, device_name: str, refine_chunk: int
            ) -> dict[str, Any]:
    from common.models import clip_vit, load_clip
    from maskclip.crop_classify import crop_and_classify_embeddings
    from maskclip.mask_tokens import MaskTokenViT, default_rma_blocks

    device = torch.device(device_name)
    torch.manual_seed(0)
    visual = load_clip(arch, None, device=device).model.visual.eval()
    size = tuple(int(s) for s in visual.image_size)
    image = torch.randn(1, 3, *size, device=device)
    masks = torch.randn(1, proposals, *size, device=device)
    plain = MaskTokenViT(visual, rma=False, register_visual=False)
    depth = len(visual.transformer.resblocks)
    blocks = default_rma_blocks(depth) or (depth - 1,)  # a tower under 6 blocks: RMA in its last block
    rma = MaskTokenViT(visual, rma_blocks=blocks, register_visual=False).to(device).eval()
    with torch.no_grad():
        rows = {
            "plain CLIP pass": _median_time(lambda: clip_vit.forward(visual, image), repeats, device),
            "mask tokens (no RMA)": _median_time(lambda: plain(image, masks), repeats, device),
            "mask tokens + RMA": _median_time(lambda: rma(image, masks), repeats, device),
            "crop-and-classify": _median_time(
                lambda: crop_and_classify_embeddings(visual, image, masks, chunk=chunk), repeats, device),
        }
    grid = (size[0] // rma.patch_size, size[1] // rma.patch_size)
    first = rma.rma[str(rma.rma_blocks[0])]
    return {"arch": arch, "device": device_name, "proposals": proposals, "repeats": repeats,
            "seconds": rows, "ratio_to_mask_rma": {k: v / rows["mask tokens + RMA"] for k, v in rows.items()},
            "refinement_memory": refinement_memory(first, proposals, grid, refine_chunk, device)}


def format_report(res: dict[str, Any]) -> str:
    lines = [f"MaskCLIP cost: {res['arch']} on {res['device']}, {res['proposals']} proposals, "
             f"median of {res['repeats']}",
             f"{'row':<24} {'seconds':>9} {'x mask+RMA':>11}"]
    for k, v in res["seconds"].items():
        lines.append(f"{k:<24} {v:>9.4f} {res['ratio_to_mask_rma'][k]:>11.2f}")
    m = res["refinement_memory"]
    lines.append(f"refinement features: naive {m['naive_feature_mib']:.1f} MiB, chunked ({m['chunk']} proposals) "
                 f"{m['chunked_feature_mib']:.1f} MiB" + (f"; CUDA peak {m['naive_peak_mib']:.1f} vs "
                                                         f"{m['chunked_peak_mib']:.1f} MiB" if "naive_peak_mib" in m
                                                         else "") + f"; max |diff| {m['max_abs_diff']:.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.maskclip_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=25, help="crops per CLIP batch in crop-and-classify")
    parser.add_argument("--refine-chunk", type=int, default=25, help="proposals per refinement chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared machine more threads time the contention)")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = measure(args.arch, args.proposals, args.repeats, args.chunk, args.device, args.refine_chunk)
    print(format_report(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
