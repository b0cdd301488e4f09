"""``backends.presence``: queues the workers consume; ``/predict`` and ``/health`` with none (issue 16, 6c)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backends.presence import QueueConsumers, active_queues_of, workers_by_queue
from tests.backends._app_fakes import make_harness
from tests.backends.test_app import predict_body, tasks_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Workers:
    """The broadcast's answer, counted; ``None`` raises as an unreachable broker would."""

    def __init__(self, queues: frozenset[str] | None) -> None:
        self.queues, self.asked = queues, 0

    def __call__(self) -> frozenset[str]:
        self.asked += 1
        if self.queues is None:
            raise ConnectionError("broker down")
        return self.queues


def test_no_worker_is_never_answered_from_memory_and_a_present_one_is_refreshed_in_the_background() -> None:
    clock, workers = Clock(), Workers(frozenset())
    consumers = QueueConsumers(workers, present_ttl_s=30, absent_ttl_s=5, clock=clock)
    assert consumers.snapshot().consumed("predict") is None  # never asked
    assert consumers.consumed("predict") is False and workers.asked == 1
    clock.now += 1
    assert consumers.consumed("predict") is False and workers.asked == 2  # asked again, not remembered
    workers.queues = frozenset({"predict", "train"})
    clock.now += 1
    # A worker started a second after "no worker": the next request sees it (CI met the remembered
    # "no worker" of a /health poll: a first /predict went to the background with a false warning).
    assert consumers.consumed("predict") is True and workers.asked == 3
    clock.now += 29
    assert consumers.consumed("train") is True and workers.asked == 3
    workers.queues = frozenset()
    clock.now += 2
    assert consumers.consumed("predict") is True  # stale but present: answered now, refreshed behind
    deadline = time.monotonic() + 5
    while workers.asked < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The worker answered 3 s ago and not now: busy (a solo worker running a task), not gone.
    assert workers.asked == 4 and consumers.consumed("predict") is None
    clock.now += 121
    assert consumers.consumed("predict") is False and workers.asked == 5  # silent past the grace: asked, none


def test_a_queue_other_workers_do_not_consume_is_asked_about_again() -> None:
    clock, workers = Clock(), Workers(frozenset({"train"}))
    consumers = QueueConsumers(workers, clock=clock)
    assert consumers.consumed("predict") is False and consumers.consumed("train") is True
    assert workers.asked == 1  # "train" came from memory
    workers.queues = frozenset({"train", "predict"})
    clock.now += 0.1
    assert consumers.consumed("predict") is True and workers.asked == 2  # "predict"'s False was not trusted


def test_a_broker_that_cannot_be_asked_is_unknown_not_absent_and_not_asked_again_at_once() -> None:
    clock, workers = Clock(), Workers(None)
    consumers = QueueConsumers(workers, absent_ttl_s=5, clock=clock)
    assert consumers.consumed("predict") is None and workers.asked == 1
    clock.now += 4
    assert consumers.consumed("predict") is None and workers.asked == 1  # remembered
    clock.now += 2
    assert consumers.consumed("predict") is None and workers.asked == 2


def test_requests_that_ask_together_share_one_answer() -> None:
    gate = threading.Event()
    asked: list[int] = []

    def slow() -> frozenset[str]:
        asked.append(1)
        gate.wait(5)
        return frozenset()

    consumers = QueueConsumers(slow)
    answers: list[bool | None] = []
    threads = [threading.Thread(target=lambda: answers.append(consumers.consumed("predict"))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert answers == [False] * 4 and len(asked) == 1


def test_predict_with_no_worker_answers_at_once_with_the_fix_and_leaves_the_tasks_queued(tmp_path: Path) -> None:
    consumers = QueueConsumers(Workers(frozenset({"train"})))
    harness = make_harness(tmp_path, consumers=consumers)
    with TestClient(harness.app) as client:
        body = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 3))).json()
        health = client.get("/health").json()

    assert body["results"] == [[], [], []]
    assert "No worker is consuming the 'predict' queue" in body["warning"] and "assistant worker" in body["warning"]
    ((job, wait_s),) = harness.dispatcher.jobs
    assert wait_s == 0 and len(job.chunks) == 1  # sent, not waited for: the background publisher's
    assert health["status"] == "UP" and health["model_class"] == "MKTBackend"
    assert health["workers"]["consumed"] is False and "assistant worker" in health["workers"]["fix"]


@pytest.mark.parametrize("queues", [frozenset({"predict"}), None])
def test_predict_waits_as_before_with_a_worker_or_when_nobody_can_tell(tmp_path: Path, queues) -> None:
    harness = make_harness(tmp_path, consumers=QueueConsumers(Workers(queues)))
    with TestClient(harness.app) as client:
        body = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 2))).json()
        health = client.get("/health").json()

    assert "warning" not in body and all(r != [] for r in body["results"])
    assert harness.dispatcher.jobs[0][1] == harness.settings.predict_inline_budget_s
    assert health["workers"]["consumed"] is (None if queues is None else True)


def test_workers_are_grouped_by_the_queues_they_consume() -> None:
    class Inspect:
        def active_queues(self):
            return {
                "w1@gpu": [{"name": "predict"}, {"name": "train"}],
                "w2@cpu": [{"name": "predict"}],
                "w3@idle": None,
            }

    class Control:
        def inspect(self, timeout: float) -> Inspect:
            assert timeout == 0.5
            return Inspect()

    class App:
        control = Control()

    assert workers_by_queue(App(), 0.5) == {"predict": ["w1@gpu", "w2@cpu"], "train": ["w1@gpu"]}
    # /predict's question is the same broadcast, reduced to the queue names
    assert active_queues_of(App(), 0.5)() == frozenset({"predict", "train"})
