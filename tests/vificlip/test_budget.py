"""`python -m benchmarks.params vificlip`: the paper-scale counts (ViT-B/16 on the meta device)."""

from __future__ import annotations

from benchmarks.param_budgets.vificlip import budget_rows


def test_paper_scale_trainable_parameters() -> None:
    rows = {r.method: r.ours for r in budget_rows()}
    assert rows["bridge-and-prompt b2n 16+16, depth 9"] == 16 * 768 * 9 + 16 * 512 * 9
    assert rows["bridge-and-prompt few-shot 10+10, depth 12"] == 10 * 768 * 12 + 10 * 512 * 12
    assert rows["vanilla zero-shot CLIP"] == 0
    # the whole CLIP ViT-B/16 (149.6M) = image tower + text tower + token-embedding table + logit scale
    whole = rows["ViFi-CLIP + token embedding"]
    assert round(whole / 1e5) == 1496
    assert whole == rows["image-FT"] + rows["text-FT"] + 49408 * 512 + 1
    assert rows["ViFi-CLIP (official trainable set)"] == whole - 49408 * 512
