"""Chunking, the background publish task, the LS client, bulk planning, the Redis state and the Celery dispatcher.

Unit tests use an in-memory state and a fake Label Studio behind ``httpx.MockTransport``. The
Redis and Celery tests (marked ``integration``) use the real Redis on 127.0.0.1:6379 DB 12 with
a key prefix of their own, and an embedded solo worker running stand-in tasks.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backends.bulk import BulkRun, plan_preannotation, resolve_version
from backends.convert import SCORES_KEY, recalibration_of
from backends.dispatch import INLINE, CeleryDispatcher, PredictJob, PublishJob, claim_key, plan_chunks
from backends.errors import BackendError
from backends.serving import load_policy
from backends.state import MemoryState, RedisState
from backends.tasks import publish
from preannotation import fit_recalibration
from state.contracts import PredictRequest
from state.ledger import open_ledger
from state.registry import Registry
from state.settings import Settings
from studio.client import LabelStudioClient
from studio.config import parse_label_config
from studio.errors import LabelStudioError, LabelStudioUnavailable, StudioError
from studio.protocol import Task
from tests.backends._app_fakes import fake_result
from tests.backends._fixtures import config

VERSION = "base-abc"


def tasks(n: int, keys: tuple[str, ...] = ("image",), first_id: int = 1) -> list[Task]:
    return [Task(id=first_id + i, data={k: f"/data/upload/1/{k}{i}.jpg" for k in keys}, project=1) for i in range(n)]


# --- chunking -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "chunk_size", "expected"), [(5, 2, [2, 2, 1]), (3, 32, [3]), (1, 1, [1]), (0, 4, [])])
def test_plan_chunks_cuts_by_images(n: int, chunk_size: int, expected: list[int]) -> None:
    vocab = parse_label_config(config("multilabel"))

    chunks, failures = plan_chunks(vocab, tasks(n), project=1, checkpoint_version=VERSION, chunk_size=chunk_size)

    assert [len(c.task_ids) for c in chunks] == expected and failures == []
    assert [c.index for c in chunks] == list(range(len(expected)))
    assert all(c.request.model_version == VERSION and c.request.project == 1 for c in chunks)
    assert [t for c in chunks for t in c.task_ids] == list(range(1, n + 1))


def test_plan_chunks_keeps_a_tasks_images_together_and_reports_bad_data() -> None:
    vocab = parse_label_config(config("two_images"))
    batch = [*tasks(3, ("before", "after")), Task(id=9, data={"before": "x.jpg"}, project=1)]

    chunks, failures = plan_chunks(vocab, batch, project=1, checkpoint_version=VERSION, chunk_size=5)

    assert [c.task_ids for c in chunks] == [(1, 2), (3,)]  # 5 images per chunk: two tasks of two
    assert [len(c.request.images) for c in chunks] == [4, 2]
    assert [(f.task_id, f.reason) for f in failures] == [(9, "missing_data")]


# --- a fake Label Studio ------------------------------------------------------------------------------
class FakeLS:
    """The few REST endpoints the client uses, in memory."""

    def __init__(self, label_config: str, task_list: list[Task]) -> None:
        self.label_config = label_config
        self.tasks = task_list
        self.predictions: list[dict[str, Any]] = []
        self.unavailable = 0  # answer 503 this many times
        self.requests: list[str] = []

    def client(self) -> LabelStudioClient:
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return LabelStudioClient("http://ls.test", "token-123", max_retries=0, httpx_client=http)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, json={"detail": "down"})
        path, params = request.url.path, request.url.params
        if path == "/api/predictions/" and request.method == "POST":
            body = json.loads(request.content)
            stored = {**body, "id": len(self.predictions) + 1}
            self.predictions.append(stored)
            return httpx.Response(201, json=stored)
        if path.startswith("/api/predictions/") and request.method == "PATCH":
            pid = int(path.rstrip("/").rsplit("/", 1)[1])
            stored = next(p for p in self.predictions if p["id"] == pid)
            stored.update(json.loads(request.content))
            return httpx.Response(200, json=stored)
        if path.endswith("/import/predictions") and request.method == "POST":  # bulk: all or nothing
            for body in json.loads(request.content):
                self.predictions.append({**body, "id": len(self.predictions) + 1})
            return httpx.Response(201, json={"created": len(json.loads(request.content))})
        if path == "/api/predictions/":
            found = [
                p
                for p in self.predictions
                if ("task" not in params or p["task"] == int(params["task"]))
                and ("project" not in params or p["task"] in {t.id for t in self.tasks})
            ]
            return httpx.Response(200, json=found)
        if path == "/api/tasks/":
            page, size = int(params.get("page", 1)), int(params.get("page_size", 100))
            rows = [
                {"id": t.id, "data": t.data, "total_annotations": 1 if t.id % 2 == 0 else 0}
                for t in self.tasks[(page - 1) * size : page * size]
            ]
            return httpx.Response(
                200, json={"tasks": rows, "total": len(self.tasks), "total_annotations": 0, "total_predictions": 0}
            )
        if path.startswith("/api/projects/"):
            return httpx.Response(200, json={"id": 1, "title": "p", "label_config": self.label_config})
        return httpx.Response(404, json={"detail": "no such route"})


def test_client_posts_predictions_with_the_per_tag_scores() -> None:
    ls = FakeLS(config("multilabel"), tasks(2))
    client = ls.client()
    vocab = parse_label_config(config("multilabel"))
    chunks, _ = plan_chunks(vocab, ls.tasks, project=1, checkpoint_version=VERSION, chunk_size=8)
    job = PublishJob(job_id="j", chunk=0, project=1, model_version=vocab.model_version(VERSION),
                     label_config=config("multilabel"), task_ids=[1, 2], claim=False)  # fmt: skip

    report = publish(job, fake_result(chunks[0].request), client=client, state=MemoryState())

    assert (report.posted, report.skipped, report.failed) == (2, 0, {})
    assert [p["task"] for p in ls.predictions] == [1, 2]
    assert all(p["model_version"] == job.model_version and 0 <= p["score"] <= 1 for p in ls.predictions)
    assert all(SCORES_KEY in item for p in ls.predictions for item in p["result"])
    assert client.task_prediction_versions(1) == {job.model_version}
    assert client.prediction_versions(1) == {1: {job.model_version}, 2: {job.model_version}}


def client_answering(handler: Any) -> LabelStudioClient:
    return LabelStudioClient(
        "http://ls.test", "k", max_retries=0, httpx_client=httpx.Client(transport=httpx.MockTransport(handler))
    )


def test_client_turns_label_studio_failures_into_studio_errors() -> None:
    ls = FakeLS(config("multilabel"), tasks(1))
    client = ls.client()
    ls.unavailable = 1

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(LabelStudioUnavailable, match="503"):
        client.task_prediction_versions(1)
    with pytest.raises(LabelStudioError, match="404") as not_found:
        client_answering(lambda r: httpx.Response(404, json={"detail": "gone"})).label_config(3)
    assert not_found.value.status == 404 and not_found.value.status_code == 502  # not worth retrying
    with pytest.raises(LabelStudioError, match="401.*ASSISTANT_LABEL_STUDIO_API_KEY"):
        client_answering(lambda r: httpx.Response(401, json={"detail": "bad token"})).label_config(3)
    with pytest.raises(LabelStudioUnavailable, match="Cannot reach"):
        client_answering(refuse).label_config(3)
    with pytest.raises(StudioError, match="No Label Studio API key"):
        LabelStudioClient("http://ls.test", "")


def test_client_lists_tasks_over_pages_and_filters_unlabeled() -> None:
    ls = FakeLS(config("multilabel"), tasks(2500))
    client = ls.client()

    assert [t.id for t in client.tasks(1)] == list(range(1, 2501))
    assert all(t.id % 2 == 1 for t in client.tasks(1, unlabeled_only=True))
    assert ls.requests.count("GET /api/tasks/") == 2 * 4  # 3 pages of 1,000 plus the empty one, twice


def test_client_reads_one_small_page_the_project_and_its_predictions_as_dicts() -> None:
    ls = FakeLS(config("multilabel"), tasks(2500))
    client = ls.client()

    (first,) = client.task_rows(1, limit=1)  # the doctor's probe: one task, one small request
    assert first["id"] == 1 and ls.requests == ["GET /api/tasks/"]
    assert client.project(1)["label_config"] == config("multilabel")
    ls.predictions = [
        {"id": 1, "task": 2, "model_version": "v1", "result": []},
        {"id": 2, "task": 2, "model_version": "v2", "result": []},
    ]
    assert [p["id"] for p in client.predictions(1)] == [1, 2]
    assert client.prediction_versions(1) == {2: {"v1", "v2"}}


# --- the publish task ---------------------------------------------------------------------------------
def publish_job(ls: FakeLS, *, claim: bool = True, job_id: str = "job-1") -> tuple[PublishJob, PredictRequest]:
    vocab = parse_label_config(ls.label_config)
    chunks, _ = plan_chunks(vocab, ls.tasks, project=1, checkpoint_version=VERSION, chunk_size=64)
    job = PublishJob(job_id=job_id, chunk=0, project=1, model_version=vocab.model_version(VERSION),
                     label_config=ls.label_config, task_ids=[t.id for t in ls.tasks], claim=claim)  # fmt: skip
    return job, chunks[0].request


def test_publish_posts_nothing_when_predict_delivered_the_chunk_inline() -> None:
    ls = FakeLS(config("multilabel"), tasks(3))
    job, request = publish_job(ls)
    state = MemoryState()
    assert state.claim(claim_key(job.job_id, 0), INLINE)

    report = publish(job, fake_result(request), client=ls.client(), state=state)

    assert not report.claimed and report.posted == 0 and ls.predictions == []


def test_publish_is_idempotent_per_task_and_version() -> None:
    ls = FakeLS(config("multilabel"), tasks(3))
    job, request = publish_job(ls)
    state = MemoryState()
    state.reserve(1, job.model_version, job.task_ids)

    first = publish(job, fake_result(request), client=ls.client(), state=state)
    again = publish(job, fake_result(request), client=ls.client(), state=state)  # a redelivery
    other = publish(publish_job(ls, job_id="job-2")[0], fake_result(request), client=ls.client(), state=state)

    assert (first.posted, again.posted, other.posted) == (3, 3 - 3, 0)
    assert (again.skipped, other.skipped) == (3, 3)
    assert len(ls.predictions) == 3
    assert not state.inflight  # released
    assert state.stats() == {"published": 3, "skipped": 6}


def test_publish_counts_failed_images_and_version_mismatches() -> None:
    ls = FakeLS(config("multilabel"), tasks(3))
    job, request = publish_job(ls, claim=False)
    state = MemoryState()

    failed = publish(job, fake_result(request, failed={"2": "not_found"}), client=ls.client(), state=state)
    mismatch = publish(job, fake_result(request, version="mkt-other"), client=ls.client(), state=state)

    assert (failed.posted, failed.failed) == (2, {"not_found": 1})
    assert failed.failures[0]["task"] == 2
    assert mismatch.posted == 0 and mismatch.failed == {"version_mismatch": 3}
    assert state.stats()["failed_not_found"] == 1


def test_publish_lets_label_studio_outages_raise_for_a_retry() -> None:
    ls = FakeLS(config("multilabel"), tasks(2))
    job, request = publish_job(ls, claim=False)
    ls.unavailable = 1

    with pytest.raises(LabelStudioUnavailable):
        publish(job, fake_result(request), client=ls.client(), state=MemoryState())
    retried = publish(job, fake_result(request), client=ls.client(), state=MemoryState())

    assert retried.posted == 2


# --- bulk planning --------------------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    base = tmp_path / "base"
    base.mkdir()
    return Registry(tmp_path / "models", str(base))


def test_bulk_plan_skips_predicted_and_in_flight_tasks(registry: Registry) -> None:
    ls = FakeLS(config("multilabel"), [*tasks(5), Task(id=6, data={"photo": "x"}, project=1)])
    client, state = ls.client(), MemoryState()
    version = parse_label_config(ls.label_config).model_version(registry.current(1).version)
    client.create_prediction(1, fake_prediction(version))
    state.reserve(1, version, [2])

    plan = plan_preannotation(client, registry, state, project=1, chunk_size=2)

    assert plan.model_version == version and plan.total == 6
    assert plan.already_predicted == [1] and plan.in_flight == [2]
    assert [(f.task_id, f.reason) for f in plan.failures] == [(6, "missing_data")]
    assert plan.job is not None and not plan.job.inline
    assert [c.task_ids for c in plan.job.chunks] == [(3, 4), (5,)]
    assert plan.queued == 3
    assert state.served_versions(1) == [version]
    # Planning again finds everything predicted or in flight: nothing to queue.
    again = plan_preannotation(client, registry, state, project=1, chunk_size=2)
    assert again.job is None and sorted(again.in_flight) == [2, 3, 4, 5]


def test_bulk_plan_unlabeled_only(registry: Registry) -> None:
    ls = FakeLS(config("multilabel"), tasks(4))

    plan = plan_preannotation(ls.client(), registry, MemoryState(), project=1, unlabeled_only=True)

    assert plan.total == 2 and plan.job is not None and plan.job.chunks[0].task_ids == (1, 3)


def test_a_refit_makes_unlabeled_predictions_stale_and_publish_replaces_them_in_place(
    registry: Registry, tmp_path: Path
) -> None:
    ls = FakeLS(config("multilabel"), tasks(4))  # tasks 2 and 4 are labeled
    client, state = ls.client(), MemoryState()
    ledger = open_ledger(None, home=tmp_path)
    settings = Settings(home=tmp_path, base_model=str(tmp_path / "base"), _env_file=None)
    checkpoint = registry.current(1).version
    try:
        first = plan_preannotation(client, registry, state, project=1, chunk_size=8, store=ledger.effort)
        assert first.job is not None and first.calibration is None and first.stale == []
        job = PublishJob(job_id="j1", chunk=0, project=1, model_version=first.model_version,
                         label_config=ls.label_config, task_ids=[1, 2, 3, 4], claim=False)  # fmt: skip
        request = first.job.chunks[0].request
        policy, _ = load_policy(ledger.effort, settings, 1, checkpoint)
        assert publish(job, fake_result(request), client=client, state=state, policy=policy).posted == 4
        before = {p["task"]: (p["id"], recalibration_of(p["result"])) for p in ls.predictions}
        assert set(before.values()) == {(1, None), (2, None), (3, None), (4, None)}

        # The project's calibration is refit: annotators keep tags the model calls 0.3 most of the time.
        rng = np.random.default_rng(0)
        p = rng.uniform(0.05, 0.95, 400)
        refit = ledger.effort.save_refit(
            1,
            checkpoint,
            recalibration=fit_recalibration(["x"] * 400, p, rng.random(400) < np.sqrt(p)),
            annotations=40,
            through_seq=40,
        )
        plan = plan_preannotation(client, registry, state, project=1, chunk_size=8, store=ledger.effort)
        assert plan.calibration == refit.id and plan.stale == [1, 3]  # labeled tasks keep theirs
        assert plan.already_predicted == [2, 4] and plan.job is not None
        assert [c.task_ids for c in plan.job.chunks] == [(1, 3)]
        job = PublishJob(job_id="j2", chunk=0, project=1, model_version=job.model_version,
                         label_config=ls.label_config, task_ids=[1, 3], claim=False)  # fmt: skip
        request = plan.job.chunks[0].request
        policy, _ = load_policy(ledger.effort, settings, 1, checkpoint)
        report = publish(job, fake_result(request), client=client, state=state, policy=policy)
        assert (report.posted, report.replaced, report.skipped) == (0, 2, 0)
        after = {p["task"]: (p["id"], recalibration_of(p["result"])) for p in ls.predictions}
        assert after == {1: (1, refit.id), 2: (2, None), 3: (3, refit.id), 4: (4, None)}  # same ids
        assert sum(r == "PATCH /api/predictions/1/" for r in ls.requests) == 1

        # Replaced once: a redelivery skips them, and the next plan finds nothing stale.
        again = publish(job, fake_result(request), client=client, state=state, policy=policy)
        assert (again.posted, again.replaced, again.skipped) == (0, 0, 2)
        settled = plan_preannotation(client, registry, state, project=1, chunk_size=8, store=ledger.effort)
        assert settled.stale == [] and settled.job is None
        # Without the effort store the plan cannot tell calibrations apart: any prediction counts.
        assert plan_preannotation(client, registry, state, project=1).already_predicted == [1, 2, 3, 4]
    finally:
        ledger.close()


def test_resolve_version_checks_the_fingerprint_and_the_registry(registry: Registry) -> None:
    base = registry.current(1).version
    assert resolve_version(registry, 1, "abcd1234", None) == base
    assert resolve_version(registry, 1, "abcd1234", base) == base
    assert resolve_version(registry, 1, "abcd1234", f"{base}+abcd1234") == base
    with pytest.raises(BackendError, match="another labeling config"):
        resolve_version(registry, 1, "abcd1234", f"{base}+ffff0000")
    with pytest.raises(BackendError, match="Unknown model version"):
        resolve_version(registry, 1, "abcd1234", "mkt-nope")


def fake_prediction(version: str) -> Any:
    from studio.protocol import Prediction

    return Prediction(model_version=version, score=0.5, result=[])


# --- Redis state and the Celery dispatcher (real Redis) -----------------------------------------------
REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    prefix = f"test-dispatch-{uuid.uuid4().hex[:8]}:"
    yield prefix
    keys = list(client.scan_iter(f"{prefix}*"))  # only what this test created
    if keys:
        client.delete(*keys)


@pytest.mark.integration
def test_redis_state_semantics(redis_prefix: str) -> None:
    state = RedisState.from_url(REDIS_URL, redis_prefix, inflight_ttl_s=60)

    assert state.claim("j:0", "inline") and state.claim("j:0", "inline") and not state.claim("j:0", "background")
    assert state.reserve(1, "v", [1, 2, 3]) == [1, 2, 3] and state.reserve(1, "v", [3, 4]) == [4]
    assert state.reserve(1, "w", [3]) == [3]  # another version is another job
    state.release(1, "v", [3])
    assert state.reserve(1, "v", [3]) == [3]
    state.record_version(1, "v1")
    time.sleep(0.01)
    state.record_version(2, "v2")
    assert state.served_versions(1) == ["v1"] and state.served_versions(None) == ["v2", "v1"]
    assert state.acquire_round_lock(5, "a", 60) is None and state.acquire_round_lock(5, "b", 60) == "a"
    assert not state.replace_round_lock(5, "x", "b", 60) and state.replace_round_lock(5, "a", "b", 60)
    assert not state.release_round_lock(5, "a") and state.release_round_lock(5, "b")
    state.add_stats({"published": 2, "failed_corrupt": 1, "skipped": 0})
    state.add_stats({"published": 1})
    assert state.stats() == {"published": 3, "failed_corrupt": 1}


@pytest.fixture
def celery_setup(redis_prefix: str, tmp_path: Path) -> Iterator[tuple[CeleryDispatcher, dict[str, Any]]]:
    from celery.contrib.testing.worker import start_worker

    from backends.settings import BackendSettings
    from workers.celery_app import make_celery

    settings = BackendSettings(broker_url=REDIS_URL, redis_key_prefix=redis_prefix, home=tmp_path)
    app = make_celery(settings, include=(), main=f"test-{redis_prefix}")
    seen: dict[str, Any] = {"published": [], "gate": threading.Event(), "fail": set()}
    state = RedisState.from_url(REDIS_URL, redis_prefix)
    queue = f"{redis_prefix}q"

    @app.task(name=f"{redis_prefix}predict", bind=True)
    def stand_in_predict(self: Any, **payload: Any) -> dict[str, Any]:
        request = PredictRequest.model_validate(payload)
        if request.images[0].task_id in seen["fail"]:
            raise RuntimeError("stand-in failure")
        if not seen["gate"].is_set() and request.images[0].task_id and request.images[0].task_id >= 100:
            seen["gate"].wait(10)  # tasks >= 100 are "slow" until the test opens the gate
        return fake_result(request).model_dump(mode="json")

    @app.task(name=f"{redis_prefix}publish")
    def stand_in_publish(result: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        parsed = PublishJob.model_validate(job)
        if parsed.claim and not state.claim(claim_key(parsed.job_id, parsed.chunk), "background"):
            return {"claimed": False}
        seen["published"].append(parsed.task_ids)
        return {"claimed": True, "posted": len(parsed.task_ids), "skipped": 0, "failed": {}}

    dispatcher = CeleryDispatcher(app, state, predict_queue=queue, publish_queue=queue, train_queue=f"{queue}-train",
                                  poll_interval_s=0.02, predict_task=f"{redis_prefix}predict",
                                  publish_task=f"{redis_prefix}publish")  # fmt: skip
    with start_worker(app, pool="solo", queues=[queue], perform_ping_check=False, loglevel="WARNING"):
        yield dispatcher, seen
    seen["gate"].set()


def bulk_job(job_id: str, ids: list[int], *, inline: bool = True) -> PredictJob:
    vocab = parse_label_config(config("multilabel"))
    version = vocab.model_version(VERSION)
    batch = [Task(id=i, data={"image": f"/data/upload/1/{i}.jpg"}, project=1) for i in ids]
    chunks, _ = plan_chunks(vocab, batch, project=1, checkpoint_version=VERSION, chunk_size=1)
    return PredictJob(job_id, 1, version, config("multilabel"), tuple(chunks), inline=inline)


@pytest.mark.integration
def test_dispatcher_claims_finished_chunks_inline_and_leaves_the_rest(
    celery_setup: tuple[CeleryDispatcher, dict[str, Any]],
) -> None:
    dispatcher, seen = celery_setup
    job = bulk_job("job-a", [1, 2, 100])
    dispatcher.state.reserve(1, job.model_version, [1, 2, 100])

    outcome = dispatcher.predict(job, wait_s=3.0)

    assert sorted(outcome.inline) == [0, 1] and outcome.background == [2] and not outcome.failed
    assert outcome.inline[0].items[0].key == "1"
    seen["gate"].set()
    deadline = time.monotonic() + 10
    while [100] not in seen["published"] and time.monotonic() < deadline:
        time.sleep(0.05)
    # The background chunk was published; the inline ones were not published twice.
    assert seen["published"] == [[100]]
    assert dispatcher.state.reserve(1, job.model_version, [1, 2]) == [1, 2]  # inline ones released


@pytest.mark.integration
def test_dispatcher_reports_failed_chunks(celery_setup: tuple[CeleryDispatcher, dict[str, Any]]) -> None:
    dispatcher, seen = celery_setup
    seen["fail"].add(7)

    outcome = dispatcher.predict(bulk_job("job-b", [6, 7]), wait_s=5.0)

    assert sorted(outcome.inline) == [0] and list(outcome.failed) == [1] and "stand-in failure" in outcome.failed[1]


@pytest.mark.integration
def test_bulk_run_follows_chains_to_their_reports(celery_setup: tuple[CeleryDispatcher, dict[str, Any]]) -> None:
    from backends.bulk import BulkPlan

    dispatcher, seen = celery_setup
    seen["fail"].add(12)
    job = bulk_job("job-c", [10, 11, 12], inline=False)
    run = BulkRun(
        dispatcher, BulkPlan(project=1, model_version=job.model_version, total=3, job=job), poll_interval_s=0.05
    )

    run.start()
    progress = run.wait(timeout_s=20)

    assert progress.finished and progress.posted == 2 and progress.failed == {"chunk_failed": 1}
    assert sorted(seen["published"]) == [[10], [11]]


@pytest.mark.integration
def test_at_most_one_round_per_project(celery_setup: tuple[CeleryDispatcher, dict[str, Any]]) -> None:
    dispatcher, _ = celery_setup

    first = dispatcher.queue_round(41)
    second = dispatcher.queue_round(41)
    other = dispatcher.queue_round(42)

    assert first.status == "queued" and second.status == "already_queued" and second.task_id == first.task_id
    assert other.status == "queued"
    # The round finished (the train worker stored its result): the lock is stale, a new round queues.
    dispatcher.app.backend.store_result(first.task_id, {"promoted": False}, "SUCCESS")
    third = dispatcher.queue_round(41)
    assert third.status == "queued" and third.task_id != first.task_id
