"""Fixtures of the backend's contract tests: an app over fakes (``_app_fakes``) and its test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.backends._app_fakes import Harness, make_harness


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    """A backend app with a fake dispatcher, a real registry and a real ledger in ``tmp_path``."""
    return make_harness(tmp_path)


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    """A test client of the harness's app (lifespan run)."""
    with TestClient(harness.app) as test_client:
        yield test_client
