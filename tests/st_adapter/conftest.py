"""Shared fixtures of the ST-Adapter tests."""

from __future__ import annotations

import pytest

from tests.helpers.videos import RandomVideoDataModule, RandomVideos

__all__ = ["RandomVideoDataModule", "RandomVideos"]


@pytest.fixture()
def random_video_dm() -> type[RandomVideoDataModule]:
    """The in-memory video datamodule class (instantiate with the sizes a test needs)."""
    return RandomVideoDataModule
