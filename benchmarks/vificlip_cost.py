"""``python -m benchmarks.vificlip_cost``: a ViFi-CLIP training step with the text pass on the shortest context
that holds the longest prompt vs the full 77-token pass, and the image-FT step, measured in one invocation.

While the text tower trains, every training step encodes all N class prompts (N = 400 for K400). With causal
attention and end-of-text pooling, every token after the longest prompt's end-of-text token is irrelevant, so the
text pass can run on that shorter context (``short_text_context``, the default) with the same class embeddings.
This script checks the embeddings agree (max abs difference, same weights) and times, on random weights (cost does
not depend on them) and a random batch, forward + soft cross-entropy + backward + AdamW:

* ``vificlip`` with the short text context, ``vificlip`` with the full context (77 tokens; 32 for the tiny CLIP),
  and ``image_ft`` (text tower frozen: the
  class embeddings are computed once and cached);

reporting the median step time over ``--steps`` timed steps after ``--warmup`` and the ratios. With
``--accumulate A`` (A > 1) it also times whole optimiser steps of A micro-batches through Lightning (the module's
``training_step``, ``accumulate_grad_batches=A``, blending off) with ``text_once_per_step`` on (one text pass per
optimiser step, its gradient accumulated and back-propagated once) and off (the official code's pass per micro-batch),
and counts the text passes. The issue's goal:
at ViT-B/16, N = 400, batch 4 x 8 frames on a GPU (``--arch ViT-B-16 --device cuda --amp``), the 77-token step at
least 1.8x the short one. The default is the tiny ShapesWorld CLIP on the CPU (what every machine has).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch


def _class_names(n: int) -> list[str]:
    # Kinetics-like lengths: two to four words
    words = ["playing", "guitar", "riding", "a", "bike", "juggling", "balls", "shooting", "basketball", "archery"]
    return [" ".join(words[(i + k) % len(words)] for k in range(2 + i % 3)) + f" {i}" for i in range(n)]


def build(method: str, opts: dict[str, Any], short: bool):
    from vificlip.model import build_vificlip

    torch.manual_seed(0)
    model = build_vificlip(opts["arch"], None, _class_names(opts["classes"]), method, short_text_context=short,
                           device=opts["device"])
    return model.train()


def step_times(model, opts: dict[str, Any]) -> list[float]:
    dev = torch.device(opts["device"])
    size = int(model.clip.visual.image_size[0] if isinstance(model.clip.visual.image_size, (tuple, list))
               else model.clip.visual.image_size)
    video = torch.randn(opts["batch"], opts["frames"], 3, size, size, device=dev)
    label = torch.randint(0, opts["classes"], (opts["batch"],), device=dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts["amp"])
    times = []
    for i in range(opts["warmup"] + opts["steps"]):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            loss = torch.nn.functional.cross_entropy(model(video).float(), label, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= opts["warmup"]:
            times.append(time.perf_counter() - t0)
    return times


def accumulation_times(opts: dict[str, Any], once: bool) -> tuple[float, int]:
    """Median seconds per optimiser step of ``opts["accumulate"]`` micro-batches through a Lightning ``fit`` of
    :class:`vificlip.module.ViFiCLIPModule` (``text_once_per_step=once``), and the text passes of the timed steps."""
    import lightning.pytorch as pl

    from vificlip.module import ViFiCLIPModule

    a, names = opts["accumulate"], _class_names(opts["classes"])
    torch.manual_seed(0)
    module = ViFiCLIPModule(method="vificlip", arch=opts["arch"], pretrained=None, text_once_per_step=once,
                            mixup_alpha=0.0, cutmix_alpha=0.0, warmup_epochs=0, lr=1e-6,
                            data_info={"num_classes": len(names), "class_names": names})
    visual = module.model.clip.visual
    size = int(visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size)
    steps = opts["warmup"] + opts["steps"]
    g = torch.Generator().manual_seed(0)
    batches = [{"video": torch.randn(opts["batch"], opts["frames"], 3, size, size, generator=g),
                "label": torch.randint(0, len(names), (opts["batch"],), generator=g)} for _ in range(a * steps)]

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx % a == 0:
                self.marks.append((time.perf_counter(), pl_module.text_passes))

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.marks.append((time.perf_counter(), pl_module.text_passes))

    clock = Clock()
    trainer = pl.Trainer(accelerator=opts["device"], devices=1, max_steps=steps, accumulate_grad_batches=a,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[clock])
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    timed = clock.marks[opts["warmup"]:]
    per_step = [t1 - t0 for (t0, _), (t1, _) in zip(timed, timed[1:])]
    return statistics.median(per_step), timed[-1][1] - timed[0][1]


def run(opts: dict[str, Any]) -> dict[str, Any]:
    short, full = build("vificlip", opts, True), build("vificlip", opts, False)
    with torch.no_grad():
        diff = float((short.text_head.encode() - full.text_head.encode()).abs().max())
    tokens = short.text_head._prompt_tokens()[0]
    length = int(tokens.argmax(-1).max()) + 1
    res = {"max_abs_diff": diff, "context": (length, int(tokens.shape[1]))}
    res["vificlip_short"] = statistics.median(step_times(short, opts))
    del short
    res["vificlip_77"] = statistics.median(step_times(full, opts))
    del full
    res["image_ft"] = statistics.median(step_times(build("image_ft", opts, True), opts))
    if opts.get("accumulate", 1) > 1:
        res["accumulate_once"] = accumulation_times(opts, True)
        res["accumulate_every"] = accumulation_times(opts, False)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vificlip_cost", description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="shapes-clip-tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=int, default=400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--accumulate", type=int, default=1,
                   help="also time optimiser steps of this many micro-batches, one text pass per step vs one each")
    opts = vars(p.parse_args(argv))
    res = run(opts)
    print(f"{opts['arch']} on {opts['device']}, N = {opts['classes']} classes, batch {opts['batch']} x "
          f"{opts['frames']} frames, amp {opts['amp']}")
    print(f"text context {res['context'][0]} instead of {res['context'][1]} tokens; class embeddings max abs "
          f"difference {res['max_abs_diff']:.2e}")
    s, f, i = res["vificlip_short"], res["vificlip_77"], res["image_ft"]
    print(f"{'step':<28} {'median s':>10} {'vs short':>9}")
    full_name = f"vificlip, full {res['context'][1]} tokens"
    for name, t in (("vificlip, short context", s), (full_name, f), ("image-FT", i)):
        print(f"{name:<28} {t:>10.4f} {t / s:>8.2f}x")
    print(f"speed-up of the short context: {f / s:.2f}x (goal >= 1.8x at ViT-B/16 on a GPU)")
    if "accumulate_once" in res:
        (once, n_once), (every, n_every) = res["accumulate_once"], res["accumulate_every"]
        a, steps = opts["accumulate"], opts["steps"]
        print(f"optimiser step of {a} micro-batches (Lightning fit, short context): text pass once per step "
              f"{once:.4f} s ({n_once} passes in {steps} steps), per micro-batch {every:.4f} s ({n_every} passes): "
              f"{every / once:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
