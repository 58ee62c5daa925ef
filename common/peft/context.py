"""The active task of a multi-task network.

Multi-task PEFT keeps one set of small parameters per task inside a shared frozen backbone. Every task-conditioned
module holds a reference to one :class:`TaskContext`; the model sets the task once before running the backbone
for it (``with ctx.use("semseg"): feats = backbone(x)``), so the backbone's own forward code stays untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


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
        self.cache: dict[str, Any] = {}

    @property
    def task(self) -> str:
        """The active task; a clear error if the backbone is run outside :meth:`use`."""
        if self._task is None:
            raise RuntimeError(
                "No active task: run the multi-task backbone inside `with ctx.use(task): ...` "
                "(common/peft/context.py)")
        return self._task

    @property
    def index(self) -> int:
        """Position of the active task in :attr:`tasks`."""
        return self.tasks.index(self.task)

    @contextmanager
    def use(self, task: str) -> Iterator[TaskContext]:
        """Make ``task`` active for the duration of the block (and start a fresh ``cache``)."""
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; this context knows {list(self.tasks)}")
        previous, previous_cache = self._task, self.cache
        self._task, self.cache = task, {}
        try:
            yield self
        finally:
            self._task, self.cache = previous, previous_cache

    def __repr__(self) -> str:
        return f"TaskContext(tasks={list(self.tasks)}, active={self._task!r})"
