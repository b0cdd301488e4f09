"""Label Studio events reach the agent: the backend's /webhook forwards them, the inbox wakes the agent.

Uses the real Redis (DB 9) under a key prefix of its own; only those keys are deleted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent.services import AgentLocks, EventInbox, LockKeeper
from backends.dispatch import RoundTicket
from backends.webhook import WebhookHandler, redis_event_sink
from state.ledger import open_ledger

REDIS_URL = "redis://127.0.0.1:6379/9"


@pytest.fixture
def client() -> Iterator[tuple[redis.Redis, str]]:
    conn = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"agent-test-{uuid.uuid4().hex[:10]}:"
    try:
        yield conn, prefix
    finally:
        keys = list(conn.scan_iter(match=f"{prefix}*"))
        if keys:
            conn.delete(*keys)
        conn.close()


class Dispatcher:
    def queue_round(
        self, project: int, *, trigger: str = "start_training", request_id: str | None = None
    ) -> RoundTicket:
        return RoundTicket(status="queued", task_id="t1", project=project)


def test_webhook_events_wake_the_agent_with_their_action_and_project(
    client: tuple[redis.Redis, str], tmp_path: Path
) -> None:
    conn, prefix = client
    ledger = open_ledger(None, home=tmp_path)
    handler = WebhookHandler(ledger, Dispatcher(), notify=redis_event_sink(conn, prefix))  # type: ignore[arg-type]
    inbox = EventInbox(conn, prefix)
    try:
        assert (
            handler.handle({"action": "TASKS_CREATED", "project": {"id": 3}, "tasks": [{"id": 1}]}).status_code == 200
        )
        assert handler.handle({"action": "PROJECT_UPDATED", "project": {"id": 4}}).outcome == "ignored"
        annotation = {"id": 9, "task": 1, "project": 3, "result": []}
        assert (
            handler.handle({"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": annotation}).status_code
            == 201
        )
        handler.handle({"action": "PROJECT_CREATED"})  # no project: nothing forwarded
        started = time.monotonic()
        events = inbox.wait(5)
        assert time.monotonic() - started < 2  # woken at once
        assert events == [("TASKS_CREATED", 3), ("PROJECT_UPDATED", 4), ("ANNOTATION_CREATED", 3)]
        assert inbox.wait(0) == []
    finally:
        ledger.close()


def test_a_redis_failure_never_fails_the_webhook(tmp_path: Path) -> None:
    def broken(action: str, project: int) -> None:
        raise redis.ConnectionError("down")

    ledger = open_ledger(None, home=tmp_path)
    try:
        handler = WebhookHandler(ledger, Dispatcher(), notify=broken)  # type: ignore[arg-type]
        reply = handler.handle({"action": "TASKS_CREATED", "project": {"id": 3}})
        assert reply.status_code == 200
    finally:
        ledger.close()


def test_one_agent_per_project(client: tuple[redis.Redis, str]) -> None:
    conn, prefix = client
    locks = AgentLocks(conn, prefix)
    assert locks.key(3) == f"{prefix}assistant:agent-lock:3"
    first, second = LockKeeper(locks, ttl_s=2.0), LockKeeper(locks, ttl_s=2.0)
    try:
        assert first.claim(3, "agent:a") and first.claim(3, "agent:a")
        assert not second.claim(3, "agent:b")
        time.sleep(2.5)  # the heartbeat keeps it
        assert not second.claim(3, "agent:b")
        first.close()  # released at once
        assert second.claim(3, "agent:b")
    finally:
        first.close()
        second.close()
