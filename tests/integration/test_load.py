"""A small load on the real backend and worker (``load_stack``): no 5xx, and every call answered.

The same stack and load generator as ``benchmarks/bench_load.py``, at a size for the suite: 30
concurrent 1-task ``/predict`` calls and 2 calls of 50 tasks, with ``/health`` polled all along.
The only timed assertions are generous ones (the run is bounded; ``/health`` answers within a
second); the figures themselves are the benchmark's job. It also checks, on the real processes,
that the configured secrets (Label Studio API key, Basic auth password) appear in no answer and
in neither process's log.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.load_stack import (
    CONFIG,
    LS_API_KEY,
    PASSWORD,
    USER,
    LoadPlan,
    LoadStack,
    load_stack,
    redis_reachable,
    run_load,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = LoadPlan(small=30, large=2, large_tasks=50, concurrency=32, max_seconds=240.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadStack]:
    why = redis_reachable()
    if why is not None:
        pytest.skip(why)
    with load_stack(tmp_path_factory.mktemp("load"), n_images=PLAN.tasks + 1) as running:
        yield running
    # Every process the stack started is gone.
    assert not running.backend.alive() and not running.worker.alive()


def test_a_small_load_gets_no_server_error_and_every_call_an_answer(stack: LoadStack) -> None:
    report = run_load(stack, PLAN, first_task_id=PLAN.tasks * 1000)
    stack.check_alive()

    assert not report.stopped_early, report
    assert report.unanswered == 0 and report.server_errors() == 0, report.statuses
    assert report.statuses["small 200"] == PLAN.small and report.statuses["large 200"] == PLAN.large, report.statuses
    # One result per task, in every answer; with a healthy worker every task is predicted inline.
    assert report.short_answers == 0 and report.tasks_answered == report.tasks_sent == PLAN.tasks
    assert report.tasks_predicted == PLAN.tasks
    # /health kept answering during the load (generous bound; bench_load.py reports the p99).
    health = report.latencies["health"]
    assert len(health) >= 10 and report.statuses["health 200"] == len(health)
    assert max(health) < 1.0, sorted(health)[-5:]


def test_no_secret_in_answers_or_logs(stack: LoadStack) -> None:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    task = {"id": 1, "data": {"image": stack.image_urls[-1]}}
    predict = {"tasks": [task], "project": "1.17", "label_config": CONFIG, "params": {"password": PASSWORD}}
    seen = []
    with httpx.Client(base_url=stack.url, timeout=90) as client:
        for method, path, auth, body in [
            ("GET", "/health", None, None),
            ("POST", "/predict", (USER, PASSWORD), predict),
            ("GET", "/metrics", (USER, PASSWORD), None),
            ("GET", "/versions", (USER, PASSWORD), None),
            ("POST", "/setup", (USER, PASSWORD), {"project": 1, "schema": "<View/>"}),
            ("POST", "/setup", (USER, "wrong"), {"project": 1, "schema": CONFIG}),
        ]:
            response = client.request(method, path, auth=auth, json=body)
            assert response.status_code < 500, response.text
            seen.append(response.text + str(dict(response.headers)))
    logs = stack.logs()
    assert "POST /predict -> 200" in logs  # the backend's access log ran
    for secret in (LS_API_KEY, PASSWORD, token):
        assert secret not in "\n".join(seen)
        assert secret not in logs, secret


def test_a_10000_label_vocabulary_is_predicted_by_the_real_worker(stack: LoadStack) -> None:
    # The backend parses the 290 kB config, the worker encodes 10,000 labels (once; the label
    # embeddings are then cached) and scores them: answered inline, well within the 60 s budget.
    labels = [f"tag {i:05d}" for i in range(10_000)]
    choices = "".join(f'<Choice value="{label}"/>' for label in labels)
    config = (
        '<View><Image name="image" value="$image"/><Choices name="tags" toName="image" choice="multiple" '
        f'model_threshold="0" model_max_tags="2">{choices}</Choices></View>'
    )
    tasks = [{"id": 2 + i, "data": {"image": stack.image_urls[i]}} for i in range(2)]
    with httpx.Client(base_url=stack.url, auth=(USER, PASSWORD), timeout=120) as client:
        setup = client.post("/setup", json={"project": 1, "schema": config})
        response = client.post("/predict", json={"tasks": tasks, "project": "1.17", "label_config": config})

    assert setup.status_code == 200, setup.text
    assert response.status_code == 200, response.text[:2000]
    results = response.json()["results"]
    assert len(results) == 2 and all(r for r in results), results  # both predicted inline, none left to []
    for result in results:
        assert result["model_version"] == setup.json()["model_version"]
        (item,) = result["result"]
        assert len(item["value"]["choices"]) == 2 and set(item["value"]["choices"]) <= set(labels)
        assert len(item["assistant"]["scores"]) == 50  # the kept per-tag scores, out of 10,000
