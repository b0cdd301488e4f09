"""Automatic rounds: the beat schedule, which projects are due, and queueing under the lock (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from state.contracts import CHECK_ROUNDS, COUNT_EFFORT, QUEUE_TRAIN, SCHEDULED_ROUNDS, TRAIN_ROUND
from state.ledger import LedgerEvent, open_ledger
from state.locks import RoundLocks
from state.schedule import EFFORT_ENTRY, SCHEDULE_ENTRY, THRESHOLD_ENTRY, beat_schedule, parse_cron
from state.settings import Settings
from workers.beat import due_projects, queue_round
from workers.celery_app import DEFAULT_INCLUDE, make_celery

REDIS_URL = "redis://127.0.0.1:6379/11"


def _events(project: int, n: int, start: int = 0) -> list[LedgerEvent]:
    return [LedgerEvent.annotation("ANNOTATION_CREATED", project=project, annotation_id=start + i) for i in range(n)]


def test_the_schedule_follows_the_settings(tmp_path: Path) -> None:
    assert set(beat_schedule(Settings(home=tmp_path))) == {THRESHOLD_ENTRY, EFFORT_ENTRY}
    effort = beat_schedule(Settings(home=tmp_path))[EFFORT_ENTRY]
    assert effort["task"] == COUNT_EFFORT and effort["schedule"] == 60.0  # every project's uncounted annotations
    both = beat_schedule(Settings(home=tmp_path, round_schedule="30 2 * * 1-5"))
    assert both[THRESHOLD_ENTRY]["task"] == CHECK_ROUNDS and both[THRESHOLD_ENTRY]["schedule"] == 60.0
    assert both[SCHEDULE_ENTRY]["task"] == SCHEDULED_ROUNDS and both[SCHEDULE_ENTRY]["schedule"] == parse_cron(
        "30 2 * * 1-5"
    )
    assert beat_schedule(Settings(home=tmp_path, round_threshold=0, effort_check_interval_s=0)) == {}
    with pytest.raises(ValueError, match="5-field"):
        parse_cron("every night")
    app = make_celery(Settings(home=tmp_path), include=())
    assert app.conf.beat_schedule.keys() == {THRESHOLD_ENTRY, EFFORT_ENTRY}
    assert app.conf.task_routes[CHECK_ROUNDS] == {"queue": "predict"}
    assert app.conf.task_routes[TRAIN_ROUND] == {"queue": QUEUE_TRAIN}
    assert {"workers.rounds", "workers.beat"} <= set(DEFAULT_INCLUDE)


def test_projects_are_due_by_new_corrections_since_their_last_round(tmp_path: Path) -> None:
    ledger = open_ledger(None, home=tmp_path)
    ledger.append(_events(1, 5) + _events(2, 2, start=100))
    assert ledger.projects() == [1, 2]
    assert due_projects(ledger, 3) == [(1, 5)]
    ledger.record_round(1, "r0001", ledger.watermark(1))
    assert due_projects(ledger, 3) == [] and due_projects(ledger, 0) == [(2, 2)]  # 0 means "any new"
    ledger.close()


@pytest.fixture
def queued(tmp_path: Path) -> Iterator[tuple[Any, RoundLocks, Settings]]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"assistant-test-{uuid.uuid4().hex[:10]}:"
    settings = Settings(home=tmp_path, broker_url=REDIS_URL, redis_key_prefix=prefix, round_threshold=3)
    app = make_celery(settings, include=())
    yield app, RoundLocks(client, prefix), settings
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        client.delete(key)
    client.close()


@pytest.mark.integration
def test_queueing_takes_the_lock_and_a_second_request_finds_it_queued(queued) -> None:
    app, locks, _ = queued
    first = queue_round(app, locks, 8, trigger="manual", queue_ttl_s=60, stages=["stage2"])
    assert first.status == "queued" and locks.holder(8) == first.task_id
    again = queue_round(app, locks, 8, trigger="threshold", queue_ttl_s=60)
    assert again.status == "already_queued" and again.task_id == first.task_id
    # The queued task finished without releasing (its process died after storing the result):
    # the lock is stale and the next request takes it over.
    app.backend.store_result(first.task_id, {"status": "kept"}, "SUCCESS")
    third = queue_round(app, locks, 8, trigger="manual", queue_ttl_s=60)
    assert third.status == "queued" and locks.holder(8) == third.task_id


@pytest.mark.integration
def test_the_threshold_check_queues_due_projects_once(queued) -> None:
    app, locks, settings = queued
    ledger = open_ledger(None, home=settings.home)
    ledger.append(_events(4, 3) + _events(5, 1, start=50))
    ledger.close()
    check = app.tasks[CHECK_ROUNDS]  # called as a function, on this app (its settings)
    outcome = check()
    assert set(outcome) == {"4"} and outcome["4"]["status"] == "queued" and outcome["4"]["new"] == 3
    assert check()["4"]["status"] == "already_queued"
    assert locks.holder(5) is None


@pytest.mark.integration
@pytest.mark.slow
def test_assistant_beat_and_a_worker_queue_a_round_once_the_threshold_is_reached(tmp_path: Path) -> None:
    """`assistant beat` sends the check every second; a predict worker runs it and queues the round."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO_ROOT

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"assistant-test-{uuid.uuid4().hex[:10]}:"
    home = tmp_path / "home"
    ledger = open_ledger(None, home=home)
    ledger.append(_events(21, 4))
    ledger.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "LABEL_STUDIO_"))}
    env.update(
        {
            "ASSISTANT_HOME": str(home),
            "ASSISTANT_BROKER_URL": REDIS_URL,
            "ASSISTANT_REDIS_KEY_PREFIX": prefix,
            "ASSISTANT_ROUND_THRESHOLD": "3",
            "ASSISTANT_ROUND_CHECK_INTERVAL_S": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    entry = [sys.executable, "-c", "from cli.main import main; main()"]
    procs = []
    try:
        for name, args in (("beat", ["beat"]), ("worker", ["worker", "-Q", "predict", "-n", "beat-test@%h"])):
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        entry + args,
                        cwd=REPO_ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        locks = RoundLocks(client, prefix)
        deadline = time.monotonic() + 120
        while locks.holder(21) is None:
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text() + (
                tmp_path / "worker.log"
            ).read_text()
            assert all(p.poll() is None for p in procs), (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        holder = locks.holder(21)
        # The round waits on the train queue (no train worker here); later checks find it queued.
        time.sleep(3)
        assert locks.holder(21) == holder
        queued = list(client.scan_iter(match=f"{prefix}train*", count=100))
        assert queued, "no message on the train queue"
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()
