"""``benchmarks.vificlip_cost``: the short text context gives the 77-token pass's class embeddings, and the
accumulation mode runs real Lightning optimiser steps whose text passes it counts (one per step vs one per
micro-batch). Times are printed by the benchmark, never asserted."""

from __future__ import annotations

from benchmarks.vificlip_cost import accumulation_times, main

OPTS = {"arch": "shapes-clip-tiny", "device": "cpu", "classes": 6, "batch": 2, "frames": 2, "steps": 2, "warmup": 1,
        "amp": False, "accumulate": 3}


def test_accumulation_mode_counts_one_text_pass_per_optimiser_step() -> None:
    once, passes_once = accumulation_times(OPTS, True)
    every, passes_every = accumulation_times(OPTS, False)
    assert (passes_once, passes_every) == (2, 6)  # 2 timed steps of 3 micro-batches
    assert once > 0 and every > 0


def test_benchmark_prints_the_ratios_and_the_embedding_difference(capsys) -> None:
    assert main(["--classes", "6", "--batch", "2", "--frames", "2", "--steps", "1", "--warmup", "0",
                 "--accumulate", "2"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("max abs difference ")[1].split()[0])
    assert diff < 1e-5
    assert "text pass once per step" in out and "(1 passes in 1 steps)" in out and "(2 passes)" in out
