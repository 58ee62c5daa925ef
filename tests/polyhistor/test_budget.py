"""`python -m benchmarks.params polyhistor`: every row within 5% of the paper, except the one the README explains."""

import csv

import pytest

from benchmarks.params import available_papers, main
from polyhistor.decoder import segformer_head_parameters
from polyhistor.network import PASCAL_OUTPUTS

EXPLAINED = {"MTL - decoders only"}  # polyhistor/README.md, "Parameter budgets"
SWIN_T_NO_HEAD = 27_519_354


def test_paper_scale_budget_table(tmp_path, capsys):
    out = tmp_path / "budget.csv"
    assert main(["polyhistor", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Polyhistor-Lite" in printed and "ratio" in printed
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    assert len(rows) == 14
    for method, r in rows.items():
        if r["paper_m"] and method not in EXPLAINED:
            assert abs(float(r["ratio"]) - 1) <= 0.05, (method, r["ours_m"], r["paper_m"])
    decoders = sum(segformer_head_parameters([96, 192, 384, 768], k, 256) for k in PASCAL_OUTPUTS.values())
    assert int(rows["MTL - decoders only"]["ours"]) == decoders
    assert int(rows["MTL - full fine-tuning"]["ours"]) == SWIN_T_NO_HEAD + decoders
    assert int(rows["Single-task full fine-tuning"]["ours"]) == 4 * SWIN_T_NO_HEAD + decoders
    # the paper's headline: Polyhistor trains about a tenth of Hyperformer's parameters
    assert int(rows["Polyhistor"]["ours"]) < 0.15 * int(rows["Hyperformer"]["ours"])


def test_dispatcher_names_the_known_papers():
    assert "polyhistor" in available_papers()
    with pytest.raises(SystemExit, match="no parameter budget"):
        main(["no_such_paper"])
