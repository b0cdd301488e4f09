"""Fixtures for end-to-end tests against a real Label Studio server (see ``ls_harness``).

- ``ls_server``: one server per test session, started from the cached migrated template and
  stopped (its whole process group) at the end of the session, even when tests fail. Skips with
  the reason when the Label Studio venv is absent.
- ``ls_client``: an :class:`~tests.integration.ls_harness.LSClient` logged in with the admin's
  legacy token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.ls_harness import LSClient, LSServer, ensure_template, find_ls_venv, start_server


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LSServer]:
    """A running Label Studio owned by this session (fresh data dir, free loopback port)."""
    venv = find_ls_venv()
    if venv is None:
        pytest.skip("Label Studio venv not found: set ASSISTANT_LS_VENV or run `make ls-venv`")
    template = ensure_template(venv)
    server = start_server(tmp_path_factory.mktemp("label-studio"), venv=venv, template=template)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ls_client(ls_server: LSServer) -> Iterator[LSClient]:
    """A client of ``ls_server`` authenticated with the admin's legacy token."""
    with LSClient.for_server(ls_server) as client:
        yield client
