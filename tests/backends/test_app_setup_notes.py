"""``/setup`` answers at once and stays valid, and notes in the log what a user must know.

- the offline demo model serving a project (once per project);
- a project without the webhook that brings its annotations (checked in the background, a few
  seconds after ``/setup``: Label Studio calls ``/setup`` to validate a model *before* it creates
  the webhook).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backends.app import create_app
from backends.settings import BackendSettings
from backends.webhook_check import WebhookCheck, missing_webhook_error
from state.ledger import open_ledger
from state.registry import Registry
from state.settings import BUNDLED_MODEL_DIR
from tests.backends._app_fakes import FakeDispatcher
from tests.backends._fixtures import config


class RecordingWatch:
    """Stands in for :class:`backends.webhook_check.WebhookWatch`: records the projects it is told about."""

    def __init__(self) -> None:
        self.projects: list[int | None] = []

    def seen(self, project: int | None) -> None:
        self.projects.append(project)

    def check(self, project: int) -> WebhookCheck:  # pragma: no cover - the app only calls seen()
        return WebhookCheck(project, (), (), problem=missing_webhook_error(project, ["http://b:9090"]))


def _client(tmp_path: Path, base_model: str, watch: RecordingWatch | None) -> TestClient:
    settings = BackendSettings(home=tmp_path / "home", base_model=base_model)
    app = create_app(
        settings,
        dispatcher=FakeDispatcher(),
        registry=Registry(settings.models_dir, settings.base_model),
        ledger=open_ledger(None, home=settings.home),
        webhook_watch=watch,  # type: ignore[arg-type]
    )
    return TestClient(app)


def test_the_demo_model_is_named_once_per_project(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backends.app")
    with _client(tmp_path, str(BUNDLED_MODEL_DIR), RecordingWatch()) as client:
        for project in (1, 1, 2):
            resp = client.post("/setup", json={"project": project, "schema": config("multilabel")})
            assert resp.status_code == 200 and resp.json()["model_version"]

    notes = [r.getMessage() for r in caplog.records if "offline demo model" in r.getMessage()]
    assert len(notes) == 2 and "project 1" in notes[0] and "project 2" in notes[1]
    assert "ASSISTANT_BASE_MODEL=ViT-B-16:laion2b_s34b_b88k" in notes[0]


def test_a_real_model_gets_no_demo_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "base-model"
    base.mkdir()
    caplog.set_level(logging.WARNING, logger="backends.app")
    with _client(tmp_path, str(base), RecordingWatch()) as client:
        assert client.post("/setup", json={"project": 1, "schema": config("multilabel")}).status_code == 200

    assert not [r for r in caplog.records if "offline demo model" in r.getMessage()]


def test_every_setup_tells_the_watch_and_answers_without_waiting_for_it(tmp_path: Path) -> None:
    watch = RecordingWatch()
    base = tmp_path / "base-model"
    base.mkdir()
    with _client(tmp_path, str(base), watch) as client:
        first = client.post("/setup", json={"project": "4.1700000000", "schema": config("multilabel")})
        second = client.post("/setup", json={"project": 4, "schema": config("multilabel")})

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert watch.projects == [4, 4]  # the watch decides when a check is due (WebhookWatch.seen)


def test_without_an_api_key_there_is_no_watch_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backends.app")
    settings = BackendSettings(home=tmp_path / "home", base_model=str(tmp_path), label_studio_api_key="")
    app = create_app(
        settings, dispatcher=FakeDispatcher(), registry=Registry(settings.models_dir, str(tmp_path)),
        ledger=open_ledger(None, home=settings.home),
    )  # fmt: skip

    assert app.state.services.webhook_watch is None
    assert any("cannot check that projects send it their annotations" in r.getMessage() for r in caplog.records)
