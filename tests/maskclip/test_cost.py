"""benchmarks/maskclip_cost.py at tiny scale: rows, ratios and the chunked refinement's equality and memory."""

from __future__ import annotations

from benchmarks.maskclip_cost import format_report, measure


def test_cost_benchmark_runs_at_tiny_scale() -> None:
    res = measure("shapes-clip-tiny", proposals=6, repeats=1, chunk=4, device_name="cpu", refine_chunk=2)
    assert set(res["seconds"]) == {"plain CLIP pass", "mask tokens (no RMA)", "mask tokens + RMA",
                                   "crop-and-classify"}
    assert res["ratio_to_mask_rma"]["mask tokens + RMA"] == 1.0
    mem = res["refinement_memory"]
    assert mem["max_abs_diff"] <= 1e-5
    assert mem["chunked_feature_mib"] <= 0.5 * mem["naive_feature_mib"]
    assert "crop-and-classify" in format_report(res)
