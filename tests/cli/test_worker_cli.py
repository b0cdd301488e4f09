"""`assistant worker`: argument checks and the Celery argv it starts (worker_main stubbed)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery
from typer.testing import CliRunner

from cli.main import app


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, list[str]]]:
    calls: list[tuple[Any, list[str]]] = []
    monkeypatch.setattr(Celery, "worker_main", lambda self, argv: calls.append((self, list(argv))))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield calls
    root.handlers[:] = handlers
    root.setLevel(level)


def test_defaults_to_a_solo_pool_on_both_queues(started) -> None:
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 0, result.output
    ((celery_app, argv),) = started
    assert argv == ["worker", "--queues=predict,train", "--pool=solo", "--concurrency=1", "--loglevel=INFO"]
    assert celery_app.conf.task_acks_late is True


def test_prefork_with_device_and_thread_split(started, monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    result = CliRunner().invoke(
        app, ["worker", "-Q", "predict", "--device", "cuda:1", "-c", "2", "--hostname", "gpu1@%h", "--json-logs"]
    )
    assert result.exit_code == 0, result.output
    ((celery_app, argv),) = started
    assert "--pool=prefork" in argv and "--concurrency=2" in argv and "--hostname=gpu1@%h" in argv
    from workers.celery_app import settings_of

    settings = settings_of(celery_app)
    assert settings.device == "cuda:1" and settings.torch_threads == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [(["-Q", "gpu"], "unknown queue"), (["--pool", "solo", "-c", "2"], "solo pool runs one task at a time")],
)
def test_bad_arguments_exit_with_the_fix(started, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["worker", *args])
    assert result.exit_code == 1 and message in result.output and not started
