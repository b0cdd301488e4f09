"""Fixtures of the worker unit tests: a tiny checkpoint on disk, images, settings and a runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from state.settings import Settings
from tests.workers._helpers import save_tiny_checkpoint, worker_settings, write_images
from workers.runtime import Runtime


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-tiny checkpoint saved with version ``tiny-v1`` (shared, never modified by tests)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-v1", "tiny-v1")


@pytest.fixture(scope="session")
def tiny_checkpoint_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second test-tiny checkpoint (other weights) with version ``tiny-v2``."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt2") / "tiny-v2", "tiny-v2", seed=1)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Six distinct PNG images in a folder of their own."""
    write_images(tmp_path / "images", 6)
    return tmp_path / "images"


@pytest.fixture
def settings(tmp_path: Path, tiny_checkpoint: Path, image_dir: Path) -> Settings:
    """Worker settings rooted in tmp_path, local images allowed from ``image_dir``."""
    return worker_settings(tmp_path / "home", tiny_checkpoint, media_local_roots=[image_dir])


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A worker runtime over ``settings`` (closed after the test)."""
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        rt.close()
