"""Secrets are never returned nor logged: every endpoint, every outcome, with fakes and with Redis down.

The backend is configured with a Label Studio API key, Basic auth, a webhook token and a broker
URL whose password is set. Then every route is called with good requests, bad ones (401, 404,
405, 413, 422, malformed JSON), requests that make the backend fail (a dispatcher that raises,
Redis unreachable), and requests that carry secrets of their own (``access_token``,
``params.password``, a guessed token, a guessed password). No response body or header, and no
log record (message, arguments, exception text), may contain any of the secrets, nor the
``user:password`` pair in base64 as the client sent it.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backends.app import create_app
from backends.settings import BackendSettings
from tests.backends._app_fakes import FakeDispatcher, make_harness
from tests.backends._fixtures import config, payload
from tests.backends.test_app import predict_body, tasks_for

LS_API_KEY = "ls-api-k3y-0f5e1d9c7b3a"
USER, PASSWORD = "ls-backend", "basic-pa55w0rd-7e2c"
WEBHOOK_TOKEN = "webhook-t0ken-91ad"
REDIS_PASSWORD = "redis-pa55-4b8f"
# Secrets the caller sends (they must not come back either).
ACCESS_TOKEN, MEDIA_PASSWORD = "ls-access-t0ken-55aa", "media-s3cret-66bb"
GUESSED_PASSWORD, GUESSED_TOKEN = "guessed-pa55-77cc", "guessed-t0ken-88dd"
SECRETS = [
    LS_API_KEY,
    PASSWORD,
    WEBHOOK_TOKEN,
    REDIS_PASSWORD,
    ACCESS_TOKEN,
    MEDIA_PASSWORD,
    GUESSED_PASSWORD,
    GUESSED_TOKEN,
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    base64.b64encode(f"{USER}:{GUESSED_PASSWORD}".encode()).decode(),
]
SECRET_SETTINGS: dict[str, Any] = {
    "label_studio_url": "http://127.0.0.1:9",
    "label_studio_api_key": LS_API_KEY,
    "basic_auth_user": USER,
    "basic_auth_password": PASSWORD,
    "webhook_token": WEBHOOK_TOKEN,
    # Port 9 (discard) on loopback: nothing answers, so every Redis call fails fast.
    "broker_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:9/15",
    "redis_timeout_s": 0.2,
    # 64 kB: the 100 kB body of _calls gets a 413, every other one fits.
    "max_body_bytes": 64 * 1024,
}


def _basic(password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}


def _calls() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, request kwargs) for every route and outcome the module checks."""
    body = predict_body("multilabel", tasks_for("multilabel", 3))
    body["params"] = {"login": "media-user", "password": MEDIA_PASSWORD}
    setup = {"project": 1, "schema": config("multilabel"), "access_token": ACCESS_TOKEN}
    auth = {"headers": _basic()}
    return [
        ("GET", "/health", {}),
        ("GET", "/", {}),
        ("POST", "/setup", {"json": setup, **auth}),
        ("POST", "/setup", {"json": {**setup, "schema": "<View>"}, **auth}),  # 422: broken XML
        ("POST", "/setup", {"json": setup, "headers": _basic(GUESSED_PASSWORD)}),  # 401
        ("POST", "/setup", {"json": setup}),  # 401: no credentials
        ("POST", "/predict", {"json": body, **auth}),
        ("POST", "/predict", {"json": {**body, "tasks": "broken"}, **auth}),  # 422
        ("POST", "/predict", {"content": b'{"tasks": [', "headers": {**_basic(), "content-type": "application/json"}}),
        ("POST", "/predict", {"content": b"x" * 100_000, "headers": {**_basic(), "content-type": "application/json"}}),
        ("POST", "/webhook", {"json": payload("ls_webhook_annotation_created"), "params": {"token": WEBHOOK_TOKEN}}),
        ("POST", "/webhook", {"json": payload("ls_webhook_annotation_updated"), "params": {"token": GUESSED_TOKEN}}),
        ("POST", "/webhook", {"json": payload("ls_webhook_start_training"), **auth}),
        (
            "POST",
            "/webhook",
            {"json": {"action": "ANNOTATION_CREATED"}, "headers": {"X-Assistant-Token": WEBHOOK_TOKEN}},
        ),
        ("POST", "/train", {"json": {"project": "1.17"}, **auth}),
        ("GET", "/versions", auth),
        ("GET", "/metrics", auth),
        ("GET", "/nope", auth),  # 404
        ("DELETE", "/predict", auth),  # 405
    ]


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _exchange(client: TestClient) -> tuple[list[int], str]:
    """Every call of :func:`_calls`; the statuses and all the response text (bodies and headers)."""
    statuses, seen = [], []
    for method, path, kwargs in _calls():
        response = client.request(method, path, **kwargs)
        statuses.append(response.status_code)
        seen.append(response.text)
        seen.extend(f"{name}: {value}" for name, value in response.headers.items())
    return statuses, "\n".join(seen)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every server-side record in full: message, raw arguments, exception and stack text."""
    lines = []
    for record in caplog.records:
        if record.name.startswith(("httpx", "httpcore")):  # the test client's own log of what it sent
            continue
        lines.append(f"{record.getMessage()} {record.msg!r} {record.args!r}")
        if record.exc_info and record.exc_info[1] is not None:
            lines.append("".join(traceback.format_exception(record.exc_info[1])))
        if record.stack_info:
            lines.append(record.stack_info)
    return "\n".join(lines)


def test_secrets_never_leave_the_backend(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    harness = make_harness(tmp_path, **SECRET_SETTINGS)
    with TestClient(harness.app) as client:
        statuses, seen = _exchange(client)

    assert _leaks(seen) == [], seen
    assert _leaks(_logged(caplog)) == []
    # Every kind of answer was exercised: success, created, and each error status.
    assert {200, 201, 400, 401, 404, 405, 413, 422} <= set(statuses), statuses
    assert statuses[6] == 200 and len(harness.dispatcher.jobs) == 1  # /predict ran


def test_a_500_never_returns_the_exception_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A bug whose exception message holds a secret: the answer is generic, the details go to the log.
    error = RuntimeError(f"boom {LS_API_KEY}")
    harness = make_harness(tmp_path, **SECRET_SETTINGS, dispatcher=FakeDispatcher(raise_on_predict=error))
    with TestClient(harness.app, raise_server_exceptions=False) as client:
        response = client.post(
            "/predict", json=predict_body("multilabel", tasks_for("multilabel", 1)), headers=_basic()
        )

    assert response.status_code == 500
    assert _leaks(response.text + str(response.headers)) == [] and "boom" not in response.text
    assert response.json()["request_id"] in response.json()["detail"]  # what to look for in the log
    assert "boom" in _logged(caplog)


@pytest.fixture
def redis_down_client(tmp_path: Path) -> Iterator[TestClient]:
    """The real services (Celery dispatcher, Redis state, queue metrics) with Redis unreachable."""
    base = tmp_path / "base-model"
    base.mkdir()
    settings = BackendSettings(home=tmp_path / "home", base_model=str(base), **SECRET_SETTINGS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_secrets_never_leave_the_backend_when_redis_is_down(
    redis_down_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    statuses, seen = _exchange(redis_down_client)

    assert _leaks(seen) == [], seen
    assert _leaks(_logged(caplog)) == []
    assert 503 in statuses and all(code != 500 for code in statuses), statuses
