"""Where the project keeps what it makes: the repo root, `outputs/`, the MLflow store."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The cvinw checkout (the folder holding pyproject.toml), or $CVINW_HOME, or the working directory."""
    env = os.environ.get("CVINW_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file():
        return here
    return Path.cwd().resolve()


def outputs_dir() -> Path:
    """`outputs/` under the project root ($CVINW_OUTPUTS overrides)."""
    env = os.environ.get("CVINW_OUTPUTS")
    return Path(env).expanduser().resolve() if env else project_root() / "outputs"


def pretrained_dir() -> Path:
    """Cache of the ShapesWorld-pretrained tiny backbones: `outputs/pretrained/<name>/`."""
    return outputs_dir() / "pretrained"


def data_dir() -> Path:
    """Default home of generated ShapesWorld datasets: `outputs/data/<name>/` ($CVINW_DATA overrides)."""
    env = os.environ.get("CVINW_DATA")
    return Path(env).expanduser().resolve() if env else outputs_dir() / "data"
