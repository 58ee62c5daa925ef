"""Per-paper parameter budgets for ``python -m benchmarks.params <paper>``.

A paper contributes one module ``benchmarks/param_budgets/<paper>.py`` defining

* ``TITLE: str`` -- one line saying what is counted (backbone, tasks, scale), and
* ``budget_rows() -> list[BudgetRow]`` -- our trainable-parameter count of every table row beside the paper's.

The dispatcher finds the module by name; nothing else needs registering.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetRow:
    """One table row: our trainable-parameter count next to the paper's (in millions, as papers print it)."""

    method: str
    ours: int
    paper_m: float | None
    note: str = ""

    @property
    def ours_m(self) -> float:
        return self.ours / 1e6

    @property
    def ratio(self) -> float | None:
        return None if not self.paper_m else self.ours_m / self.paper_m

    def within(self, tolerance: float = 0.05) -> bool | None:
        """|ours / paper - 1| <= tolerance; None when the paper gives no figure."""
        r = self.ratio
        return None if r is None else abs(r - 1.0) <= tolerance
