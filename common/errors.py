"""The project's own errors, and how the command line shows them.

An error of the project (a class defined in one of its packages: :class:`common.data.base.DatasetLayoutError`, a
sample error under ``on_error: raise``, :class:`common.callbacks.NonFiniteLossError`, :class:`DataCheckError`, ...)
carries a message that says what is wrong and how to fix it. ``python -m <paper>`` and ``python -m
benchmarks.reproduce`` print that message alone (:func:`short_error`), without the traceback, unless ``--debug`` is on
the command line or ``CVINW_DEBUG=1`` is set. jsonargparse wraps an error raised while it links arguments (the
datamodule's ``info`` read for the model) in a ``ValueError`` that repeats every argument; the message inside is
what is shown.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from common.paths import project_root

__all__ = ["CVInWError", "DataCheckError", "debug_requested", "project_error", "short_error", "DEBUG_ENV"]

DEBUG_ENV = "CVINW_DEBUG"


class CVInWError(Exception):
    """Base of errors whose message is the whole story for a user (what is wrong, and the fix)."""


class DataCheckError(CVInWError):
    """The data a run or a reproduction needs is missing or not in the expected layout (checked before training)."""


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` in ``argv`` or ``CVINW_DEBUG`` set to something other than ``''``/``0``/``false``."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return "--debug" in (argv or []) or env not in ("", "0", "false", "no")


def _defined_in_project(exc: BaseException) -> bool:
    module = sys.modules.get(type(exc).__module__)
    path = getattr(module, "__file__", None)
    if not path:
        return False
    path_ = Path(path).resolve()
    root = project_root().resolve()
    return path_.is_relative_to(root) and not any(p.startswith(".") for p in path_.relative_to(root).parts)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return seen


def _is_link_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and str(exc).startswith("Call to compute_fn of link")


def project_error(exc: BaseException) -> BaseException | None:
    """The error to show for ``exc``: the first project error in its cause chain; for a jsonargparse link error
    the error inside it; else None (an unexpected error keeps its traceback)."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, Exception) and _defined_in_project(e):
            return e
    if _is_link_error(exc) and exc.__cause__ is not None:
        return exc.__cause__
    return None


def short_error(exc: BaseException) -> str:
    """``error: <message>`` of the error :func:`project_error` picks (the class name only for errors not of the
    project), and where the traceback is."""
    shown = project_error(exc) or exc
    text = str(shown).strip() or type(shown).__name__
    if not _defined_in_project(shown):
        text = f"{type(shown).__name__}: {text}"
    return f"error: {text}\n(the traceback: add --debug, or set {DEBUG_ENV}=1)"
