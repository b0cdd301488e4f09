"""Schemathesis against the backend's own OpenAPI schema: no input gets a 5xx or a traceback.

The app runs in-process (ASGI) over the same fakes as the contract tests (``_app_fakes``): a
fake dispatcher that answers like the workers, a real registry and a real SQLite ledger under
tmp, so no Redis or worker is needed. Every operation of the schema (``/health``, ``/setup``,
``/predict``, ``/webhook``, ``/train``, ``/versions``, ``/metrics``) gets

- schemathesis' coverage cases (boundary values, missing and wrong-typed fields, unexpected
  methods), positive and negative;
- a bounded number of fuzzed cases (hypothesis), positive and negative;

twice: with auth off (every body reaches its handler) and with Basic auth and a webhook token on
(every header schemathesis invents reaches the auth checks). ``/predict`` and ``/setup`` also get
fuzzed bodies that carry a valid labeling config, so that the tasks reach the converters and the
(fake) workers instead of stopping at the config check.

Each answer must pass schemathesis' ``not_a_server_error`` and be below 500; an error answer must
be the documented ``{"detail", "request_id"}`` with no traceback in it.

The schemathesis pytest plugin's lazy ``from_fixture`` loader does not run under pytest 9 (it sets
``Function._nodeid``, which pytest 9 no longer has), so the cases are drawn here through
``as_strategy`` and ``iter_coverage_cases``, its public per-operation API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from tests.backends._app_fakes import make_harness
from tests.backends._fixtures import config

OPERATIONS = [
    ("GET", "/health"),
    ("POST", "/setup"),
    ("POST", "/predict"),
    ("POST", "/webhook"),
    ("POST", "/train"),
    ("GET", "/versions"),
    ("GET", "/metrics"),
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
# Fuzzed cases per operation and mode; the whole module takes about a minute on 2 busy cores.
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def _check(case: Any, response: Any) -> None:
    """No 5xx (schemathesis' own check, then ours), and errors in the documented shape."""
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and case.method.upper() != "HEAD":
        body = json.loads(response.text)
        assert set(body) >= {"detail", "request_id"}, body
        assert [body["request_id"]] == response.headers["x-request-id"]  # schemathesis lists header values
        assert "Traceback" not in response.text


def _schema(root: Path, **auth: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", make_harness(root, **auth).app)


@pytest.fixture(scope="module", params=["open", "auth"])
def schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The backend's schema over the fakes, with auth off ("open") or on ("auth")."""
    root = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    if request.param == "open":
        return _schema(root)
    return _schema(root, basic_auth_user="ls", basic_auth_password="fuzz-pa55word", webhook_token="fuzz-t0ken")


def test_the_schema_lists_every_route(schema: Any) -> None:
    found = sorted((op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations())
    assert found == sorted(OPERATIONS)


def test_coverage_cases_get_no_server_error(schema: Any) -> None:
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        generation = schema.config.generation_for(operation=operation, phase="coverage")
        cases = list(schema.iter_coverage_cases(operation, generation_modes=MODES, generation_config=generation))
        assert cases, operation.label
        for case in cases:
            response = case.call()
            _check(case, response)
            statuses.setdefault(operation.label, set()).add(response.status_code)
    # The cases reached the handlers: some were accepted, some refused as invalid or unauthorised.
    assert any(code < 300 for codes in statuses.values() for code in codes), statuses
    assert any({401, 422} & codes for codes in statuses.values()), statuses


@pytest.fixture(scope="module")
def open_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The schema with auth off: every generated body reaches its handler."""
    return _schema(tmp_path_factory.mktemp("schemathesis-fuzz"))


@pytest.fixture(scope="module")
def auth_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The schema with Basic auth and a webhook token on."""
    root = tmp_path_factory.mktemp("schemathesis-fuzz-auth")
    return _schema(root, basic_auth_user="ls", basic_auth_password="fuzz-pa55word", webhook_token="fuzz-t0ken")


# /health takes no input and /metrics only an optional free-form header: nothing about them can be
# invalid, so schemathesis has no negative case to generate (their coverage cases still run).
NO_INVALID_INPUT = {"/health", "/metrics"}
FUZZED = [
    (m, p, mode)
    for m, p in OPERATIONS
    for mode in MODES
    if mode == GenerationMode.POSITIVE or p not in NO_INVALID_INPUT
]


@pytest.mark.parametrize(("method", "path", "mode"), FUZZED, ids=[f"{m}-{p}-{mode}" for m, p, mode in FUZZED])
@FUZZ
@given(data=st.data())
def test_fuzzed_cases_get_no_server_error(
    open_schema: Any, method: str, path: str, mode: GenerationMode, data: st.DataObject
) -> None:
    case = data.draw(open_schema[path][method].as_strategy(generation_mode=mode))
    _check(case, case.call())


@pytest.mark.parametrize(("method", "path"), [op for op in OPERATIONS if op[1] != "/health"])
@settings(FUZZ, max_examples=8)
@given(data=st.data())
def test_fuzzed_credentials_get_no_server_error(auth_schema: Any, method: str, path: str, data: st.DataObject) -> None:
    case = data.draw(auth_schema[path][method].as_strategy(generation_mode=GenerationMode.POSITIVE))
    response = case.call()
    _check(case, response)
    assert response.status_code in (401, 404, 405), response.text  # invented credentials never pass


VALID_CONFIG = config("multi_control")


def _with_config(case: Any) -> Any:
    if isinstance(case.body, dict):
        case.body["label_config" if case.path == "/predict" else "schema"] = VALID_CONFIG
    return case


@pytest.mark.parametrize("path", ["/predict", "/setup"])
@FUZZ
@given(data=st.data())
def test_fuzzed_bodies_with_a_valid_config_get_no_server_error(
    open_schema: Any, path: str, data: st.DataObject
) -> None:
    case = _with_config(data.draw(open_schema[path]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE)))
    response = case.call()
    _check(case, response)
    if path == "/predict" and response.status_code == 200:
        # One entry per task, in task order, whatever the tasks held.
        assert len(response.json()["results"]) == len(case.body.get("tasks", []))


# --- inputs a schema-driven generator does not produce ---------------------------------------------
@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(make_harness(tmp_path_factory.mktemp("schemathesis-raw")).app) as test_client:
        yield test_client


_CFG = json.dumps(config("multilabel")).encode()


def _deep(depth: int, open_: bytes, close: bytes, leaf: bytes = b"") -> bytes:
    return open_ * depth + leaf + close * depth


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/setup", b'{"project": ' + _deep(5_000, b'{"id": ', b"}", b"1") + b', "schema": "<View/>"}'),
        ("/setup", b'{"project": ' + _deep(100, b'{"id": ', b"}", b"1") + b', "schema": "<View/>"}'),
        ("/predict", b'{"tasks": ' + _deep(100_000, b"[", b"]") + b"}"),
        ("/webhook", b'{"action": "ANNOTATION_CREATED", "annotation": ' + _deep(20_000, b"[", b"]") + b"}"),
        ("/predict", b'{"tasks": [{"id": 1e400, "data": {}}], "label_config": "<View/>"}'),
        # Ids out of the 64-bit range overflowed the ledger's INTEGER columns (500), and a negative
        # project reached the registry (503); both are the caller's error.
        ("/predict", b'{"tasks": [{"id": 99999999999999999999999999, "data": {}}], "label_config": "<View/>"}'),
        (
            "/predict",
            b'{"tasks": [{"id": 1, "data": {"image": "/a.jpg"}}], "project": -4197, "label_config": ' + _CFG + b"}",
        ),
        ("/webhook", b'{"action": "ANNOTATION_CREATED", "annotation": {"id": 1e30, "task": 1, "project": 1}}'),
        ("/webhook", b'{"action": "ANNOTATION_CREATED", "annotation": {"id": 100000000000000000000, "project": 1}}'),
        (
            "/webhook",
            b'{"action": "ANNOTATIONS_DELETED", "project": 1, "annotations": [{"id": 100000000000000000000}]}',
        ),
        ("/webhook", b'{"action": "START_TRAINING", "project": {"id": -2}}'),
        ("/predict", b'{"tasks": [], "label_config": "\\udcff"}'),
        ("/setup", b"\xff\xfe not utf-8"),
        ("/webhook", b"[1, 2, 3]"),
        ("/webhook", b'{"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1e999}]}'),
    ],
    ids=[
        "nested-project-5000",
        "nested-project-100",
        "nested-tasks",
        "nested-webhook",
        "huge-float-id",
        "huge-int-id",
        "negative-project",
        "float-annotation-id",
        "huge-annotation-id",
        "huge-deleted-id",
        "negative-round-project",
        "lone-surrogate",
        "not-utf8",
        "array",
        "infinite-id",
    ],
)
def test_pathological_json_gets_a_4xx(client: TestClient, path: str, content: bytes) -> None:
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body) == {"detail", "request_id"} and "Traceback" not in body["detail"]
