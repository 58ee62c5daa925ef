"""The active task of a multi-task network.

Multi-task PEFT keeps one set of small parameters per task inside a shared frozen backbone. Every task-conditioned
module holds a reference to one :class:`TaskContext`; the model sets the task once before running the backbone
for it (``with ctx.use("semseg"): feats = backbone(x)``), so the backbone's own forward code stays untouched.

Stacked execution: ``with ctx.use_stacked(["semseg", "sal"]): feats = backbone(torch.cat([x, x]))`` runs every
task in one pass over a batch made of equal chunks, chunk ``i`` for task ``i``. Modules that only act on their own
input rows (adapters, LoRA deltas, generated adapters) apply each task's weights to its chunk
(:meth:`TaskContext.per_chunk`); the result equals one pass per task, with one large batch instead of several small
ones. Modules that change the backbone's own weights per task (BitFit biases, tuned norms) or its token count (VPT)
cannot: they read :attr:`TaskContext.task`, which raises in stacked mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


class TaskContext:
    """Holds the task the backbone is currently computing, plus per-task values computed for this forward.

    ``cache`` is a scratch dict cleared at every :meth:`use`: hypernetworks put the weights they generated for the
    active task there, so they are computed once per task per forward, not once per sample or per layer call.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        if not tasks:
            raise ValueError("TaskContext needs at least one task name")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"TaskContext: duplicate task names in {list(tasks)}")
        self.tasks: tuple[str, ...] = tuple(tasks)
        self._task: str | None = None
        self._stacked: tuple[str, ...] | None = None
        self.cache: dict[str, Any] = {}

    @property
    def task(self) -> str:
        """The active task; a clear error if the backbone is run outside :meth:`use`."""
        if self._stacked is not None:
            raise RuntimeError(
                f"the backbone runs tasks {list(self._stacked)} stacked in one batch, and a module asked for a single "
                "active task: that module cannot run stacked; run one pass per task (`with ctx.use(task)`) "
                "(common/peft/context.py)")
        if self._task is None:
            raise RuntimeError(
                "No active task: run the multi-task backbone inside `with ctx.use(task): ...` "
                "(common/peft/context.py)")
        return self._task

    @property
    def index(self) -> int:
        """Position of the active task in :attr:`tasks`."""
        return self.tasks.index(self.task)

    @property
    def stacked(self) -> tuple[str, ...] | None:
        """The tasks of the batch's chunks in stacked mode (:meth:`use_stacked`), else None."""
        return self._stacked

    @contextmanager
    def use(self, task: str) -> Iterator[TaskContext]:
        """Make ``task`` active for the duration of the block (and start a fresh ``cache``)."""
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; this context knows {list(self.tasks)}")
        with self._activate(task, None):
            yield self

    @contextmanager
    def use_stacked(self, tasks: Sequence[str]) -> Iterator[TaskContext]:
        """Run ``tasks`` at once: the batch is ``len(tasks)`` equal chunks along dim 0, chunk ``i`` for ``tasks[i]``
        (and a fresh ``cache``)."""
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise KeyError(f"use_stacked needs distinct known tasks; got {list(tasks)}, this context knows "
                           f"{list(self.tasks)}")
        with self._activate(None, tasks):
            yield self

    @contextmanager
    def _activate(self, task: str | None, stacked: tuple[str, ...] | None) -> Iterator[None]:
        """Set the active task (or stacked tasks) and a fresh cache; restore the previous ones on exit."""
        previous = self._task, self._stacked, self.cache
        self._task, self._stacked, self.cache = task, stacked, {}
        try:
            yield
        finally:
            self._task, self._stacked, self.cache = previous

    def per_chunk(self, x: torch.Tensor, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn(task, x)`` for the active task; in stacked mode ``fn`` on each task's chunk of ``x``, concatenated."""
        if self._stacked is None:
            return fn(self.task, x)
        n = len(self._stacked)
        if x.shape[0] % n:
            raise RuntimeError(f"stacked tasks {list(self._stacked)}: a tensor of batch {x.shape[0]} does not split "
                               f"into {n} equal chunks (common/peft/context.py)")
        if n == 1:
            return fn(self._stacked[0], x)
        return torch.cat([fn(t, c) for t, c in zip(self._stacked, x.chunk(n, dim=0), strict=True)], dim=0)

    def __repr__(self) -> str:
        active = list(self._stacked) if self._stacked is not None else self._task
        return f"TaskContext(tasks={list(self.tasks)}, active={active!r})"
