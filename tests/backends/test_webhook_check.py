"""Whether a project's annotations reach the backend: the decision over Label Studio's answers.

Label Studio is faked behind ``httpx.MockTransport`` here (one layer); the real server's behaviour
(no webhook when SSRF protection refuses the backend's address, the webhook when it does not) is
pinned by tests/integration/test_doctor.py and test_readme_stack.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import pytest

from backends.webhook_check import WebhookWatch, check_webhook
from studio.client import LabelStudioClient
from studio.errors import LabelStudioError

MODEL = "http://127.0.0.1:9090"
HOOK = {"id": 1, "project": 3, "url": f"{MODEL}/webhook", "send_payload": True, "send_for_all_actions": True,
        "is_active": True}  # fmt: skip


def _client(models: list[dict[str, Any]], hooks: list[dict[str, Any]], status: int = 200) -> LabelStudioClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if status != 200:
            return httpx.Response(status, json={"detail": "no"})
        if request.url.path.rstrip("/") == "/api/ml":
            return httpx.Response(200, json=models)
        if request.url.path.rstrip("/") == "/api/webhooks":
            return httpx.Response(200, json=hooks)
        return httpx.Response(404, json={})

    http = httpx.Client(transport=httpx.MockTransport(handle))
    return LabelStudioClient("http://ls.test", "k", max_retries=0, httpx_client=http)


def _model(url: str = MODEL) -> dict[str, Any]:
    return {"id": 7, "project": 3, "url": url}


def test_a_connected_model_with_its_webhook_is_fine() -> None:
    found = check_webhook(_client([_model()], [HOOK]), 3)

    assert found.ok and found.matching == (f"{MODEL}/webhook",)
    assert found.to_json()["problem"] is None


def test_a_token_in_the_webhooks_query_string_still_matches_and_is_never_shown() -> None:
    found = check_webhook(_client([_model(f"{MODEL}/")], [{**HOOK, "url": f"{MODEL}/webhook?token=s3cret"}]), 3)

    assert found.ok
    assert "s3cret" not in str(found.to_json())


def test_no_webhook_is_the_ssrf_trap_with_its_fix() -> None:
    found = check_webhook(_client([_model()], []), 3)

    assert not found.ok and found.problem is not None
    assert f"{MODEL}/webhook" in found.problem.what and "never reach the corrections ledger" in found.problem.what
    assert "SSRF_PROTECTION_ENABLED" in (found.problem.why or "")
    assert found.problem.fix is not None and "SSRF_PROTECTION_ENABLED=false" in found.problem.fix


@pytest.mark.parametrize(
    "hook",
    [
        {**HOOK, "is_active": False},
        {**HOOK, "send_payload": False},
        {**HOOK, "send_for_all_actions": False, "actions": ["ANNOTATION_CREATED"]},
    ],
)
def test_a_webhook_that_loses_corrections_is_named(hook: dict[str, Any]) -> None:
    found = check_webhook(_client([_model()], [hook]), 3)

    assert not found.ok and found.problem is not None and "inactive" in found.problem.what


def test_a_webhook_to_another_url_does_not_count() -> None:
    found = check_webhook(_client([_model()], [{**HOOK, "url": "http://other:9090/webhook"}]), 3)

    assert not found.ok and found.webhook_urls == ("http://other:9090/webhook",)


def test_no_model_connected() -> None:
    found = check_webhook(_client([], [HOOK]), 3)

    assert found.problem is not None and "no model is connected" in found.problem.what
    assert "Connect Model" in (found.problem.fix or "")


def test_label_studio_refusing_the_token_is_an_error_not_a_verdict() -> None:
    with pytest.raises(LabelStudioError, match="401"):
        check_webhook(_client([], [], status=401), 3)


def test_the_watch_checks_once_per_interval_in_the_background_and_logs_the_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = WebhookWatch(_client([_model()], []), delay_s=0.01, interval_s=600)
    caplog.set_level(logging.WARNING, logger="backends.webhook_check")

    timer = watch.seen(3)
    assert isinstance(timer, threading.Timer)
    timer.join(timeout=10)

    assert watch.seen(3) is None and watch.seen(None) is None  # due again only after interval_s
    assert not watch.last[3].ok
    assert any("Project 3" in r.getMessage() and "SSRF_PROTECTION_ENABLED" in r.getMessage() for r in caplog.records)


def test_the_watch_never_raises_when_label_studio_is_down(caplog: pytest.LogCaptureFixture) -> None:
    watch = WebhookWatch(_client([], [], status=503), delay_s=0.0)
    caplog.set_level(logging.WARNING, logger="backends.webhook_check")

    assert watch.check(3) is None
    assert any("could not check project 3" in r.getMessage() for r in caplog.records)
