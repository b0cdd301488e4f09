"""``/predict`` with no worker online, over real Redis (issue 16, 6c).

The backend is the real app over a real Celery app and Redis under a key prefix of its own; no
worker runs. It must answer within a second (loosely timed: under 5 s on a loaded machine) with
a message that names the fix, leave the chunks queued for the background publisher, and say in
``/health`` that no worker consumes the queue while still answering ``UP``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backends.app import create_app
from backends.settings import BackendSettings
from state.metrics import broker_redis, queue_depths
from tests.backends.test_app import predict_body, tasks_for
from tests.integration.redis_namespace import RedisNamespace

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
def namespace() -> Iterator[RedisNamespace]:
    ns = RedisNamespace(REDIS_URL, "noworker")
    yield ns
    ns.close()


def test_predict_with_no_worker_answers_within_a_second_with_the_fix(tmp_path: Path, namespace) -> None:
    base = tmp_path / "base-model"
    base.mkdir()
    settings = BackendSettings(
        home=tmp_path / "home", base_model=str(base), broker_url=REDIS_URL, redis_key_prefix=namespace.prefix
    )
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/health").json()["workers"]["consumed"] is None  # not asked yet
        started = time.monotonic()
        response = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 3)))
        took = time.monotonic() - started
        health = client.get("/health")

    print(f"/predict with no worker answered in {took:.2f} s (budget {settings.predict_inline_budget_s:.0f} s)")  # noqa: T201
    assert response.status_code == 200 and took < 5.0
    body = response.json()
    assert body["results"] == [[], [], []]
    assert "No worker is consuming the 'predict' queue" in body["warning"]
    assert "Fix: start one: `assistant worker`" in body["warning"]
    assert health.status_code == 200 and health.json()["status"] == "UP"
    assert health.json()["workers"]["consumed"] is False and health.json()["workers"]["queue"] == "predict"
    # The chunk waits on the queue for a worker, and its publish task with it (chained).
    client_redis = broker_redis(settings.broker_url, timeout_s=2.0)
    assert client_redis is not None
    depths = queue_depths(client_redis, ("predict",), settings.redis_key_prefix)
    client_redis.close()
    assert depths.waiting.get("predict") == 1
