"""Optional Basic auth, the webhook token, and secrets never reaching the logs."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from backends.settings import BackendSettings
from tests.backends._app_fakes import Harness, make_harness
from tests.backends._fixtures import config, payload
from tests.backends.test_app import assert_error, predict_body, tasks_for

USER, PASSWORD, TOKEN = "ls-backend", "pa55-w0rd-xyz", "webhook-t0ken-abc"


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return make_harness(tmp_path, basic_auth_user=USER, basic_auth_password=PASSWORD, webhook_token=TOKEN)


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app) as test_client:
        yield test_client


SETUP = {"project": 1, "schema": config("multilabel")}


def test_health_stays_open(client: TestClient) -> None:
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/setup", SETUP),
        ("POST", "/predict", predict_body("multilabel", tasks_for("multilabel", 1))),
        ("GET", "/versions", None),
        ("GET", "/metrics", None),
        ("POST", "/train", {"project": 1}),
    ],
)
def test_protected_routes_need_the_right_credentials(client: TestClient, method: str, path: str, body: object) -> None:
    none = client.request(method, path, json=body)
    wrong = client.request(method, path, json=body, headers=basic(password="nope"))
    other_scheme = client.request(method, path, json=body, headers={"Authorization": f"Token {PASSWORD}"})
    garbage = client.request(method, path, json=body, headers={"Authorization": "Basic %%%"})
    right = client.request(method, path, json=body, headers=basic())

    for resp, fragment in (
        (none, "carried none"),
        (wrong, "wrong"),
        (other_scheme, "not 'Token'"),
        (garbage, "base64"),
    ):
        assert_error(resp, 401, fragment)
        assert resp.headers["www-authenticate"].startswith("Basic")
    assert right.status_code in (200, 201), right.text


def test_webhook_takes_the_token_or_basic_credentials(client: TestClient, harness: Harness) -> None:
    body = payload("ls_webhook_annotation_created")

    assert_error(client.post("/webhook", json=body), 401, "requires the token", "x-assistant-token")
    assert_error(client.post("/webhook", json=body, headers={"X-Assistant-Token": "nope"}), 401, "wrong webhook token")
    assert_error(client.post("/webhook", json=body, headers=basic(password="nope")), 401, "wrong")
    assert client.post("/webhook", json=body, headers={"X-Assistant-Token": TOKEN}).status_code == 201
    assert client.post(f"/webhook?token={TOKEN}", json=payload("ls_webhook_annotation_updated")).status_code == 201
    assert client.post("/webhook", json=payload("ls_webhook_start_training"), headers=basic()).status_code == 201
    assert harness.ledger.count(1) == 2


def test_basic_auth_alone_also_guards_the_webhook(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, basic_auth_user=USER, basic_auth_password=PASSWORD)
    with TestClient(harness.app) as client:
        body = payload("ls_webhook_annotation_created")
        assert_error(client.post("/webhook", json=body), 401, "carried none")
        assert client.post("/webhook", json=body, headers=basic()).status_code == 201


def test_without_auth_settings_everything_is_open(tmp_path: Path) -> None:
    with TestClient(make_harness(tmp_path).app) as client:
        assert client.post("/setup", json=SETUP).status_code == 200
        assert client.post("/webhook", json=payload("ls_webhook_annotation_created")).status_code == 201


def test_secrets_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_body = predict_body("multilabel", tasks_for("multilabel", 1))
    secret_body["params"] = {"login": "media-user", "password": "media-s3cret"}
    setup = {**SETUP, "access_token": "ls-access-t0ken"}

    client.post("/predict", json=secret_body, headers=basic())
    client.post("/setup", json=setup, headers=basic())
    client.post("/setup", json=setup, headers=basic(password="wrong-guess-123"))
    client.post(f"/webhook?token={TOKEN}", json=payload("ls_webhook_annotation_created"))
    client.post("/webhook?token=guessed-t0ken", json=payload("ls_webhook_annotation_created"))
    client.post("/predict", json={**secret_body, "tasks": "broken"}, headers=basic())

    # The test client's own request log (httpx) shows the URL it sent; the server's logs must not.
    server = [r for r in caplog.records if not r.name.startswith("httpx")]
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in server)
    assert "POST /webhook" in logged  # the access log ran...
    for secret in (PASSWORD, TOKEN, "media-s3cret", "ls-access-t0ken", "wrong-guess-123", "guessed-t0ken"):
        assert secret not in logged, secret  # ...without any secret


def test_half_configured_basic_auth_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be set together"):
        BackendSettings(basic_auth_user="only-user")


def test_placeholder_secrets_are_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        BackendSettings(
            environment="production",
            label_studio_api_key="a-real-looking-key-1234",
            basic_auth_user="u",
            basic_auth_password="changeme",
        )
