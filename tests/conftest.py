"""Test setup: no network, a temporary MLflow store, a temporary outputs/ folder, few threads."""

from __future__ import annotations

import os
from pathlib import Path

# Set before anything imports huggingface_hub / transformers / mlflow.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}.items():
    os.environ[_k] = _v

import pytest  # noqa: E402

_SESSION_TMP: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """One MLflow store and one outputs/ folder per test session, never the user's."""
    global _SESSION_TMP
    import tempfile

    _SESSION_TMP = Path(tempfile.mkdtemp(prefix="cvinw-tests-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_TMP / 'mlflow.db'}")
    os.environ.setdefault("CVINW_OUTPUTS", str(_SESSION_TMP / "outputs"))
    os.environ.setdefault("CVINW_ARTIFACTS", str(_SESSION_TMP / "mlartifacts"))


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    assert _SESSION_TMP is not None
    return _SESSION_TMP


@pytest.fixture()
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store for one test; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CVINW_ARTIFACTS", str(tmp_path / "mlartifacts"))
    return uri
