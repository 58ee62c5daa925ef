"""ShapesWorld: writers of small datasets in the real on-disk formats (see ``python -m common.data.synth --help``).

:func:`write_once` is how a datamodule writes a missing stand-in: the writer's Python function, called once even
with several ranks (or nodes on a shared file system) racing, under a file lock and into a temporary folder that is
renamed into place when complete.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_once"]


def write_once(root: str | Path, writer: Callable[..., Any], **kwargs: Any) -> bool:
    """Call ``writer(tmp, **kwargs)`` and rename ``tmp`` to ``root``, unless ``root`` exists; returns whether it wrote.

    The lock is ``<root parent>/.<root name>.lock``; a writer that fails leaves no half-written ``root`` behind.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if root.exists():
                return False
            tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                writer(tmp, **kwargs)
                os.replace(tmp, root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
