"""The cache of ShapesWorld-pretrained tiny backbones: ``outputs/pretrained/<name>/{weights.pt,manifest.json}``.

:func:`ensure_pretrained` returns the cached weights, pretraining them first when they are missing (or were made for
another architecture). A cached file that does not match the sha256 its manifest records (a truncated copy, a full
disk) is an error naming the file and the fix (:func:`check_weights`), never fed to ``torch.load``. Several processes
(DDP ranks, parallel tests) may ask at once: a file lock makes one of them train while the others wait and then read
the cache.

This module stores; it does not train. The trainer (:func:`common.models.pretrain.pretrain`) registers itself with
:func:`register_trainer` when ``common.models`` is imported (``common/models/__init__.py`` imports it), so the loaders
(``clip.py``, ``timm_models.py``) can ask for cached weights without an import circle through the training code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.checkpoints import CorruptCheckpointError, check_checkpoint, checkpoint_problem
from common.models.registry import get_shapes_model
from common.paths import pretrained_dir

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
MANIFEST_FILE = "manifest.json"

#: environment variable: the pretraining budget used when a backbone is trained on first use (default 1.0)
BUDGET_ENV = "CVINW_PRETRAIN_BUDGET"

#: ``trainer(name, *, budget, root, data_budget, recipe) -> manifest``: writes a cache entry (see register_trainer)
Trainer = Callable[..., dict[str, Any]]
_TRAINER: Trainer | None = None


def register_trainer(trainer: Trainer) -> None:
    """Set the function that builds a missing cache entry (``common.models.pretrain`` registers its ``pretrain``)."""
    global _TRAINER
    _TRAINER = trainer


def cache_dir(name: str, root: Path | None = None) -> Path:
    """``outputs/pretrained/<name>/`` (``root`` overrides ``outputs/pretrained``)."""
    return (root if root is not None else pretrained_dir()) / name


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(name: str, root: Path | None = None) -> dict[str, Any] | None:
    """The manifest of a cached backbone, or None when there is no complete cache entry."""
    d = cache_dir(name, root)
    mf, wf = d / MANIFEST_FILE, d / WEIGHTS_FILE
    if not (mf.is_file() and wf.is_file()):
        return None
    try:
        return json.loads(mf.read_text())
    except json.JSONDecodeError as err:
        raise RuntimeError(
            f"corrupt manifest {mf} ({err}); rebuild it with "
            f"`python -m common.data.synth pretrain --name {name} --force`"
        ) from err


def cache_is_valid(name: str, root: Path | None = None) -> bool:
    """True when a cache entry exists and was made for the current architecture config."""
    manifest = read_manifest(name, root)
    if manifest is None:
        return False
    current = json.loads(json.dumps(get_shapes_model(name).arch_config()))  # tuples -> lists, as in the manifest
    if manifest.get("arch") != current:
        log.warning("cached %s was built for another architecture config; it will be rebuilt", name)
        return False
    return True


#: (path, size, mtime) -> sha256 of files already hashed in this process
_SHA_SEEN: dict[tuple[str, int, int], str] = {}


def check_weights(name: str, root: Path | None = None, rebuild: str | None = None) -> Path:
    """The cached weights file of ``name``, checked whole: its sha256 against the one ``manifest.json`` records
    (a manifest without one: the zip check of :func:`common.checkpoints.check_checkpoint`).

    Raises :class:`common.checkpoints.CorruptCheckpointError` naming the file and the fix (delete the entry, which is
    rebuilt on the next run, or rebuild it now with ``rebuild``, default the ``pretrain --force`` command).
    """
    d = cache_dir(name, root)
    wf, mf = d / WEIGHTS_FILE, d / MANIFEST_FILE
    rebuild = rebuild or f"python -m common.data.synth pretrain --name {name} --force"
    fix = f"Delete {d} and it is rebuilt on the next run, or rebuild it now with `{rebuild}`."
    want = ((read_manifest(name, root) or {}).get("weights") or {}).get("sha256")
    if not want:
        check_checkpoint(wf, what="cached pretrained weights", fix=fix)
        return wf
    st = wf.stat()
    key = (str(wf.resolve()), st.st_size, st.st_mtime_ns)
    have = _SHA_SEEN.get(key) or file_sha256(wf)
    if have != want:
        problem = checkpoint_problem(wf)
        raise CorruptCheckpointError(
            f"cached pretrained weights {wf} ({st.st_size:,} bytes) do not match the sha256 recorded in {mf}: the file "
            f"was cut short or changed after it was written{f' ({problem})' if problem else ''}.\n{fix}")
    _SHA_SEEN[key] = have
    return wf


def entry_lock(name: str, root: Path | None = None) -> contextlib.AbstractContextManager[None]:
    """The file lock of one cache entry (``<root>/.<name>.lock``): hold it to build an entry, so that two processes
    (DDP ranks) never build the same one twice. Also for cache entries outside the registry (a paper package's own
    tiny network), which write their weights + manifest themselves and are read back with :func:`check_weights`."""
    return _locked(cache_dir(name, root).parent / f".{name}.lock")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_budget() -> float:
    """The budget for training on first use: ``$CVINW_PRETRAIN_BUDGET`` or 1.0."""
    raw = os.environ.get(BUDGET_ENV, "1.0")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${BUDGET_ENV} must be a number (a multiple of the default budget), got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"${BUDGET_ENV} must be positive, got {raw!r}")
    return value


def ensure_pretrained(
    name: str,
    *,
    budget: float | None = None,
    force: bool = False,
    root: Path | None = None,
    data_budget: float | None = None,
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Path of the cached weights of a ShapesWorld backbone, pretraining it first if needed (progress bar + ETA).

    Args:
        name: a name from :data:`common.models.registry.SHAPES_MODELS`.
        budget: pretraining budget when training happens (default: :func:`default_budget`).
        force: retrain even if the cache is valid.
        root: cache root (default ``outputs/pretrained``).
        data_budget, recipe: passed to the registered trainer (:func:`common.models.pretrain.pretrain`) when
            training happens.
    """
    get_shapes_model(name)  # clear error for unknown names
    d = cache_dir(name, root)
    if not force and cache_is_valid(name, root):
        return check_weights(name, root)
    with entry_lock(name, root):
        if not force and cache_is_valid(name, root):  # someone else trained it while we waited
            return check_weights(name, root)
        if _TRAINER is None:
            raise RuntimeError(
                f"pretrained {name} is not in {d} and no trainer is registered: import common.models (its "
                "__init__ registers common.models.pretrain), or build it with "
                f"`python -m common.data.synth pretrain --name {name}`"
            )
        log.warning("pretrained %s not in %s: pretraining it on ShapesWorld now (once)", name, d)
        _TRAINER(
            name,
            budget=default_budget() if budget is None else budget,
            root=root,
            data_budget=data_budget,
            recipe=recipe,
        )
    return d / WEIGHTS_FILE
