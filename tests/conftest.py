"""Fixtures shared by the whole suite: a clean offline environment and the shared datasets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may reach the network: a hub fallback must fail at once.

    Nor read a developer's ``.env``: the settings read none (``ASSISTANT_ENV_FILE=/dev/null``),
    also in the processes tests start with this environment.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("ASSISTANT_ENV_FILE", os.devnull)
    yield


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real photos in ../shared/datasets (COCO128, indoor85); skips when absent."""
    if not (SHARED_DATASETS / "coco128" / "labels.jsonl").is_file():
        pytest.skip(f"real photos not found at {SHARED_DATASETS} (the shared datasets folder is absent)")
    return SHARED_DATASETS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests where CUDA is absent, with the reason."""
    del config
    if os.environ.get("ASSISTANT_TEST_GPU") == "1":
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA; no GPU on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def tiny_loaded():
    """A tiny randomly initialised MKT model (test-tiny: 32 px, patch 8, width 32), seeded."""
    import torch

    from assistant.checkpoint import load_model

    torch.manual_seed(0)
    return load_model("test-tiny", allow_random=True)


@pytest.fixture(scope="session")
def hf_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Hugging Face CLIP model directory built offline (tokenizer from open_clip's BPE)."""
    from tests.helpers import build_hf_tiny_clip

    return build_hf_tiny_clip(tmp_path_factory.mktemp("hf-tiny"))
