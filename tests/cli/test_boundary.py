"""The CLI's one error boundary: handled errors become one line and exit 1; bugs keep their traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import kombu.exceptions
import pytest
import redis
import typer
from typer.testing import CliRunner

from cli.boundary import EXIT_ERROR, error_boundary, failure_of
from cli.main import app
from errors import AssistantError
from state.registry import RegistryError
from state.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _closed_port() -> int:
    # A port the OS just handed out and nobody listens on any more: connections are refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSISTANT_BROKER_URL", url)
    monkeypatch.setenv("ASSISTANT_LABEL_STUDIO_API_KEY", "")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_redis_at_a_closed_port_gives_a_clean_message_and_exit_1(no_redis: str) -> None:
    result = runner.invoke(app, ["round", "run", "--project", "3", "--queue", "--no-wait"])
    assert result.exit_code == EXIT_ERROR, result.output
    assert not isinstance(result.exception, redis.RedisError)  # handled, not escaped
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: Cannot reach Redis")
    assert "Fix: Start Redis, or point ASSISTANT_BROKER_URL at it" in lines[0]
    assert "Traceback" not in result.output


def test_the_installed_entry_point_prints_no_traceback(no_redis: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "round", "run", "-p", "3", "--queue", "--no-wait"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == EXIT_ERROR, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("Error: Cannot reach Redis"), done.stderr


def test_an_error_base_error_from_a_command_gives_what_why_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry whose pointer names a version that does not exist: the registry's own error.
    home = tmp_path / "home"
    monkeypatch.setenv("ASSISTANT_HOME", str(home))
    get_settings.cache_clear()
    try:
        boom = RegistryError("cannot read the registry", why="the pointer is corrupt", fix="run `assistant doctor`")
        monkeypatch.setattr("state.registry.Registry.list_versions", lambda *_a, **_k: (_ for _ in ()).throw(boom))
        monkeypatch.setattr("state.registry.Registry.base_record", lambda *_a, **_k: None)
        result = runner.invoke(app, ["models", "list", "--project", "3"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == EXIT_ERROR, result.output
    assert result.stderr.strip() == (
        "Error: Cannot read the registry. The pointer is corrupt. Fix: Run `assistant doctor`."
    )


@pytest.mark.parametrize(
    ("exc", "start"),
    [
        (redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."), "Cannot reach Redis"),
        (redis.TimeoutError("Timeout reading from socket"), "Cannot reach Redis"),
        (kombu.exceptions.OperationalError("[Errno 111] Connection refused"), "Cannot reach Redis"),
        (
            httpx.ConnectError("refused", request=httpx.Request("GET", "http://ls:8080/api/projects?token=s3cret")),
            "An HTTP request to http://ls:8080/api/projects failed",
        ),
        (httpx.UnsupportedProtocol("no scheme"), "An HTTP request failed"),
    ],
)
def test_connection_failures_become_what_why_fix(exc: Exception, start: str) -> None:
    failure = failure_of(exc)
    assert failure is not None
    assert failure.message.startswith(start) and failure.fix
    assert "s3cret" not in failure.message


def test_postgres_unreachable_is_handled() -> None:
    psycopg = pytest.importorskip("psycopg")
    failure = failure_of(psycopg.OperationalError("connection refused"))
    assert failure is not None and "PostgreSQL" in failure.message and "ASSISTANT_LEDGER_URL" in failure.message


def test_bugs_are_not_swallowed() -> None:
    assert failure_of(KeyError("x")) is None
    assert failure_of(redis.ResponseError("WRONGTYPE")) is None  # a bug of ours, not an outage
    with pytest.raises(KeyError), error_boundary():
        raise KeyError("x")


def test_the_boundary_exits_1_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info, error_boundary():
        raise AssistantError("no model", fix="train one")
    assert info.value.exit_code == EXIT_ERROR
    assert capsys.readouterr().err == "Error: No model. Fix: Train one.\n"


def test_no_command_matches_exception_class_names() -> None:
    # Worker errors reach the CLI as their own classes (cli.select.wait_for loads their modules).
    for path in (REPO_ROOT / "cli").glob("*.py"):
        text = path.read_text()
        assert "__name__ not in" not in text and "__name__ in (" not in text, path


def test_a_worker_error_comes_back_through_celery_as_its_own_class() -> None:
    # What `wait_for` relies on instead of matching class names: with the error modules loaded,
    # Celery's JSON result rebuilds a worker's error as its class, so the boundary renders it.
    import json

    from celery import Celery
    from celery.backends.base import Backend

    from workers.errors import RequestError

    backend = Backend(app=Celery("boundary-test", set_as_current=False), serializer="json")
    stored = json.loads(json.dumps(backend.prepare_exception(RequestError("the payload is invalid", fix="send X"))))
    back = backend.exception_to_python(stored)
    assert type(back) is RequestError
    failure = failure_of(back)
    assert failure is not None and failure.message == "The payload is invalid. Fix: Send X."
