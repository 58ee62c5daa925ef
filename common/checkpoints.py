"""Checkpoint files checked before anything loads them: a truncated or corrupt file is an error that names the file
and the fix, not torch's "PytorchStreamReader failed reading zip archive" from deep inside Lightning.

``torch.save`` writes a zip archive whose central directory sits at the end of the file, so a file cut short
(a full disk, a copy that stopped, a job killed while writing) has lost it: opening the archive, which reads only
that directory, tells a truncated checkpoint from a whole one without reading the tensors (milliseconds, also for
checkpoints of gigabytes). Files in other formats (torch's legacy pickle format, safetensors) are not judged here.

:func:`check_checkpoint` raises :class:`CorruptCheckpointError` for a file that is empty, a cut-off zip archive or a
zip without a torch ``data.pkl``; for a Lightning checkpoint the message lists the other checkpoints of the same
folder that are whole (``best-*.ckpt``, ...) to resume from instead. The CLI calls it on ``--ckpt_path`` before it
builds anything (Lightning reads the file only after data preparation and setup, and gives no file name when it
fails); the cache of pretrained backbones (:mod:`common.models.cache`) checks its entries with it and their sha256.
"""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

__all__ = ["CorruptCheckpointError", "checkpoint_problem", "check_checkpoint", "whole_checkpoints_beside"]

_ZIP_MAGIC = b"PK\x03\x04"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be read (truncated, empty, not a torch archive)."""


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the file at ``path`` (None when it looks whole or is not a zip-format torch file).

    Only the start of the file and the zip central directory are read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _ZIP_MAGIC:
        return None  # legacy pickle, safetensors, ...: not judged here
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            ends = [i.header_offset + i.compress_size for i in zf.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return f"it is cut short or damaged ({size:,} bytes; the zip archive's central directory is unreadable: {err})"
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "it is a zip archive but not a torch checkpoint (no data.pkl)"
    if ends and max(ends) > size:
        return f"it is cut short ({size:,} bytes, its archive needs at least {max(ends):,})"
    return None


def whole_checkpoints_beside(path: str | os.PathLike) -> list[Path]:
    """The other ``*.ckpt`` files of ``path``'s folder that look whole, newest first."""
    path = Path(path)
    found = []
    for p in path.parent.glob("*.ckpt"):
        if p.resolve() == path.resolve() or not p.is_file():
            continue
        try:
            if checkpoint_problem(p) is None:
                found.append(p)
        except OSError:
            continue
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def check_checkpoint(path: str | os.PathLike | None, what: str = "checkpoint", fix: str | None = None) -> None:
    """Raise :class:`CorruptCheckpointError` naming ``path`` and the fix when the file is truncated or corrupt.

    Args:
        path: the file; None, a missing path or a Lightning keyword (``last``, ``best``, ``hpc``, a URL) is left to
            whoever resolves it.
        what: how the message names the file (``checkpoint``, ``cached pretrained weights``, ...).
        fix: the sentence that says what to do; default: resume from one of the whole checkpoints of the same
            folder (listed), or from an earlier run.
    """
    if path is None:
        return
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        return
    problem = checkpoint_problem(p)
    if problem is None:
        return
    if fix is None:
        others = whole_checkpoints_beside(p)
        if others:
            listed = "\n".join(f"  {o}  ({time.strftime('%Y-%m-%d %H:%M', time.localtime(o.stat().st_mtime))})"
                               for o in others[:5])
            fix = f"Resume from another checkpoint of the same run instead, e.g. --ckpt_path {others[0]}:\n{listed}"
        else:
            fix = (f"No other whole checkpoint is in {p.parent}: start the run again without --ckpt_path, or pass a "
                   "checkpoint of another run.")
    raise CorruptCheckpointError(f"{what} {p} cannot be read: {problem}.\n{fix}")
