"""benchmarks/polyhistor_cost.py at a tiny size: the rows run, the hypernetwork rows generate once per step, and the
table reports ratios against the Adapter row (timings themselves are a benchmark, never a test)."""

from benchmarks.polyhistor_cost import measure, table

OPTS = {"backbone": "shapes-swin-tiny", "size": 64, "batch": 2, "decoder": 16, "steps": 1, "warmup": 0,
        "device": "cpu", "amp": None, "threads": 1}


def test_cost_rows_generate_once_per_step_and_tabulate_against_the_adapter():
    results = [measure(m, OPTS) for m in ("adapter", "polyhistor", "polyhistor_lite")]
    ad, poly, lite = results
    assert ad["generations_per_step"] == 0 and ad["gen_ms"] == 0.0
    assert poly["generations_per_step"] == 1 and lite["generations_per_step"] == 1  # all tasks and layers at once
    assert all(r["step_ms"] > 0 and r["activations_mb"] > 0 for r in results)
    lines = table(results).splitlines()
    assert lines[2].split()[:1] == ["adapter"] and lines[2].split()[3] == "1.00"
    assert len(lines) == 2 + len(results)
