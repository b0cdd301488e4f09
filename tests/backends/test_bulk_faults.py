"""Faults on the bulk path, in-process: Redis losing its data or going away while a run is followed,
two publishers of the same chunk at once; and storing a chunk in one request.

The real-process versions are ``tests/integration/test_faults_redis.py`` (a private Redis
restarted mid-run) and ``tests/integration/test_faults_preannotate.py``. Here a Celery app on
the in-memory broker and result backend stands in (no worker: the tests set the results).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from backends.bulk import BULK_IMPORT_MAX_TASKS, MAX_REQUEUES, BulkPlan, BulkRun, plan_preannotation
from backends.dispatch import CeleryDispatcher
from backends.state import MemoryState, RedisState
from backends.tasks import PublishBusy, publish
from state.registry import Registry
from tests.backends._app_fakes import fake_result
from tests.backends._fixtures import config
from tests.backends.test_dispatch import REDIS_URL, FakeLS, bulk_job, fake_prediction, publish_job, tasks


# --- posting locks ----------------------------------------------------------------------------------
def test_memory_locks_are_reentrant_exclusive_and_expire() -> None:
    state = MemoryState()

    assert state.acquire_lock("a", "m1", 0.2) and state.acquire_lock("a", "m1", 0.2)  # a redelivery re-enters
    assert not state.acquire_lock("a", "m2", 0.2)
    state.release_lock("a", "m2")  # not the holder: nothing happens
    assert not state.acquire_lock("a", "m2", 0.2)
    time.sleep(0.25)
    assert state.acquire_lock("a", "m2", 0.2)  # the holder died: the lock expired
    state.release_lock("a", "m2")
    assert state.acquire_lock("a", "m3", 0.2)
    assert not state.touch_marker("run", 60) and state.touch_marker("run", 60)


@pytest.fixture
def redis_state() -> Iterator[RedisState]:
    import uuid

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    prefix = f"test-bulk-faults-{uuid.uuid4().hex[:8]}:"
    yield RedisState.from_url(REDIS_URL, prefix)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.mark.integration
def test_redis_locks_and_markers(redis_state: RedisState) -> None:
    assert redis_state.acquire_lock("a", "m1", 0.3) and redis_state.acquire_lock("a", "m1", 0.3)
    assert not redis_state.acquire_lock("a", "m2", 0.3)
    redis_state.release_lock("a", "m2")
    assert not redis_state.acquire_lock("a", "m2", 0.3)
    time.sleep(0.4)
    assert redis_state.acquire_lock("a", "m2", 0.3)
    redis_state.release_lock("a", "m2")
    assert redis_state.acquire_lock("a", "m3", 0.3)

    assert not redis_state.touch_marker("run", 60) and redis_state.touch_marker("run", 60)
    redis_state.client.delete(f"{redis_state.ns}marker:run")  # what a restart without persistence does
    assert not redis_state.touch_marker("run", 60)


def test_publish_waits_for_another_publisher_then_skips_what_it_posted() -> None:
    ls = FakeLS(config("multilabel"), tasks(2))
    job, request = publish_job(ls, claim=False)
    client, state = ls.client(), MemoryState()
    lock = f"post:1:{job.model_version}:1"
    assert state.acquire_lock(lock, "other-copy", 60)

    with pytest.raises(PublishBusy):  # the other copy never lets go within the wait: retry later
        publish(job, fake_result(request), client=client, state=state, owner="me", lock_wait_s=0.2)
    assert ls.predictions == []

    def other_copy_posts_then_releases() -> None:
        time.sleep(0.3)
        client.create_prediction(1, fake_prediction(job.model_version))
        state.release_lock(lock, "other-copy")

    thread = threading.Thread(target=other_copy_posts_then_releases)
    thread.start()
    report = publish(job, fake_result(request), client=client, state=state, owner="me", lock_wait_s=5)
    thread.join()

    assert (report.posted, report.skipped) == (1, 1)
    assert sorted(p["task"] for p in ls.predictions) == [1, 2]  # one each, none twice


def test_a_redelivered_publish_reenters_its_own_lock() -> None:
    ls = FakeLS(config("multilabel"), tasks(1))
    job, request = publish_job(ls, claim=False)
    state = MemoryState()
    assert state.acquire_lock(f"post:1:{job.model_version}:1", "msg-1", 60)  # the copy that was SIGKILLed

    started = time.monotonic()
    report = publish(job, fake_result(request), client=ls.client(), state=state, owner="msg-1", lock_wait_s=5)

    assert report.posted == 1 and time.monotonic() - started < 1
    assert state.locks == {}  # released after posting


# --- following a run while Redis goes away ------------------------------------------------------------
class FlakyState(MemoryState):
    """A MemoryState whose marker calls fail while ``down`` is set (Redis unreachable)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def touch_marker(self, name: str, ttl_s: int) -> bool:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return super().touch_marker(name, ttl_s)


@pytest.fixture
def memory_app() -> Iterator[Celery]:
    app = Celery("test-bulk-faults", broker="memory://", backend="cache+memory://")
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    yield app
    app.close()


def _run(app: Celery, state: MemoryState, ids: list[int]) -> BulkRun:
    dispatcher = CeleryDispatcher(app, state, predict_queue="p", publish_queue="p", train_queue="t")
    job = bulk_job("job-faults", ids, inline=False)
    run = BulkRun(dispatcher, BulkPlan(project=1, model_version=job.model_version, total=len(ids), job=job))
    run.start()
    return run


def _finish(app: Celery, run: BulkRun, index: int, **report: Any) -> None:
    predict_id, publish_id = run.ids[index]
    app.backend.store_result(predict_id, {}, "SUCCESS")
    app.backend.store_result(publish_id, {"posted": 1, "skipped": 0, "failed": {}, **report}, "SUCCESS")


def test_chunks_redis_lost_are_queued_again_and_finish(memory_app: Celery) -> None:
    state = MemoryState()
    run = _run(memory_app, state, [1, 2, 3])
    _finish(memory_app, run, 0)
    first_ids = dict(run.ids)
    assert run.poll().done_chunks == 1 and run.progress.redis_losses == 0

    state.markers.clear()  # Redis restarted without persistence: marker, queue and results gone
    state.inflight.clear()
    progress = run.poll()

    assert progress.redis_losses == 1 and progress.requeued_chunks == 2 and progress.requeued_tasks == 2
    assert {run.ids[1], run.ids[2]}.isdisjoint({first_ids[1], first_ids[2]})  # new messages, new ids
    assert state.reserve(1, run.job.model_version, [2, 3]) == []  # in flight again
    _finish(memory_app, run, 1)
    _finish(memory_app, run, 2)
    progress = run.poll()
    assert progress.finished and progress.posted == 3 and not progress.failed


def test_a_chunk_with_a_state_in_the_new_redis_is_not_queued_again(memory_app: Celery) -> None:
    state = MemoryState()
    run = _run(memory_app, state, [1, 2])
    predict_id, _ = run.ids[0]
    memory_app.backend.store_result(predict_id, None, "STARTED")  # picked up after the restart
    state.markers.clear()

    progress = run.poll()

    assert progress.requeued_chunks == 1 and run.requeues == {1: 1}


def test_a_chunk_lost_too_often_is_reported_failed(memory_app: Celery) -> None:
    state = MemoryState()
    run = _run(memory_app, state, [1])
    for _ in range(MAX_REQUEUES):
        state.markers.clear()
        run.poll()
    assert run.progress.requeued_chunks == MAX_REQUEUES and not run.progress.finished

    state.markers.clear()
    progress = run.poll()

    assert progress.finished and progress.failed == {"lost": 1}
    assert progress.failures[0]["task"] == 1 and "Redis lost this chunk" in progress.failures[0]["message"]
    assert state.reserve(1, run.job.model_version, [1]) == [1]  # released: the next run queues it


def test_following_a_run_waits_while_redis_is_unreachable(memory_app: Celery) -> None:
    state = FlakyState()
    run = _run(memory_app, state, [1, 2])
    state.down = True

    assert run.poll().broker_down and run.progress.done_chunks == 0  # no exception, nothing given up
    state.down = False
    _finish(memory_app, run, 0)
    _finish(memory_app, run, 1)
    progress = run.wait(timeout_s=5)

    assert not progress.broker_down and progress.finished and progress.posted == 2
    assert progress.redis_losses == 0  # unreachable is not lost: the marker survived


# --- storing a chunk in one request ----------------------------------------------------------------------
class SizedLS(FakeLS):
    """A fake Label Studio whose project answer carries ``task_number``."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/api/projects/") and path.rstrip("/").split("/")[-1].isdigit():
            self.requests.append(f"{request.method} {path}")
            return httpx.Response(
                200, json={"id": 1, "title": "p", "label_config": self.label_config, "task_number": len(self.tasks)}
            )
        return super().handle(request)


def test_a_bulk_import_job_stores_the_chunk_in_one_request_and_skips_what_is_there() -> None:
    ls = FakeLS(config("multilabel"), tasks(3))
    job, request = publish_job(ls, claim=False)
    job = job.model_copy(update={"bulk_import": True})
    client = ls.client()
    client.create_prediction(2, fake_prediction(job.model_version))  # a previous attempt stored task 2

    report = publish(job, fake_result(request), client=client, state=MemoryState())

    assert (report.posted, report.skipped) == (2, 1)
    assert ls.requests.count("POST /api/projects/1/import/predictions") == 1
    assert ls.requests.count("POST /api/predictions/") == 1  # only the setup above
    assert sorted(p["task"] for p in ls.predictions) == [1, 2, 3]


@pytest.mark.parametrize(("n_tasks", "bulk"), [(3, True), (BULK_IMPORT_MAX_TASKS + 1, False)])
def test_the_plan_imports_in_bulk_only_for_projects_small_enough(n_tasks: int, bulk: bool, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    registry = Registry(tmp_path / "models", str(base))
    ls = SizedLS(config("multilabel"), tasks(n_tasks))

    plan = plan_preannotation(ls.client(), registry, MemoryState(), project=1, chunk_size=64)

    assert plan.job is not None and plan.job.bulk_import is bulk
    assert all(plan.job.publish_job(c).bulk_import is bulk for c in plan.job.chunks)
