"""Automatic rounds: the light tasks Celery beat sends, and queueing a round under the project's lock.

Light on purpose (no torch): the checks read the corrections ledger and send ``TRAIN_ROUND`` by
name, so they run in milliseconds on any worker.

- ``assistant.check_rounds``: a round for each project with at least ``round_threshold`` new
  corrections (ledger rows since its last round);
- ``assistant.scheduled_rounds``: a round for each project with at least
  ``round_schedule_min_new`` new corrections, on the ``round_schedule`` cron line.

:func:`queue_round` is what the CLI's ``assistant round run --queue`` uses too. It mirrors the
HTTP backend's START_TRAINING path (``backends.dispatch``): take the lock for the new task id with
the queued-round TTL; if someone holds it, take it over only when that holder's task has finished
(a lock left behind); otherwise report the round already queued or running.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from celery import Celery, shared_task
from celery.result import AsyncResult
from celery.states import READY_STATES, STARTED

from state.contracts import CHECK_ROUNDS, QUEUE_TRAIN, SCHEDULED_ROUNDS, TRAIN_ROUND, RoundRequest
from state.ledger import Ledger, open_ledger
from state.locks import RoundLocks, redis_url
from state.settings import Settings
from workers.celery_app import settings_of

__all__ = ["QueuedRound", "check_rounds", "due_projects", "locks_for", "queue_round", "scheduled_rounds"]

logger = logging.getLogger(__name__)

Trigger = Literal["manual", "threshold", "schedule", "start_training", "agent"]


@dataclass(frozen=True)
class QueuedRound:
    """The answer to :func:`queue_round`.

    Attributes:
        status: ``queued`` now, or ``already_queued`` / ``already_running`` (nothing sent).
        task_id: The round's Celery task id (the lock holder).
        project: The project.
    """

    status: Literal["queued", "already_queued", "already_running"]
    task_id: str
    project: int


def locks_for(settings: Settings) -> RoundLocks:
    """The round locks in the deployment's Redis, under its key prefix."""
    return RoundLocks.from_url(redis_url(settings.broker_url, settings.result_backend), settings.redis_key_prefix)


def queue_round(
    app: Celery,
    locks: RoundLocks,
    project: int,
    *,
    trigger: Trigger,
    queue_ttl_s: float,
    stages: list[Literal["stage1", "stage2"]] | None = None,
    queue: str = QUEUE_TRAIN,
) -> QueuedRound:
    """Send ``TRAIN_ROUND`` for ``project`` unless a round is already queued or running.

    Args:
        app: A Celery app (no task modules needed).
        locks: The round locks.
        project: The project.
        trigger: What asked (recorded in the round's report).
        queue_ttl_s: The lock's lifetime while the round waits for a train worker.
        stages: Training stages (default: the train worker's ``round_stages``).
        queue: The train queue.
    """
    task_id = uuid.uuid4().hex
    holder = locks.acquire(project, task_id, queue_ttl_s)
    if holder is not None:
        state = AsyncResult(holder, app=app).state
        # A finished task's lock was left behind (its release failed): take it over.
        if state not in READY_STATES or not locks.replace(project, holder, task_id, queue_ttl_s):
            status: Literal["already_queued", "already_running"] = (
                "already_running" if state == STARTED else "already_queued"
            )
            return QueuedRound(status, holder, project)
        logger.info("project %s: the round lock of finished task %s (%s) was stale; taken over", project, holder, state)
    request = RoundRequest(project=project, trigger=trigger, stages=stages or [])
    try:
        app.send_task(TRAIN_ROUND, kwargs=request.model_dump(mode="json"), queue=queue, task_id=task_id)
    except Exception:
        locks.release(project, task_id)
        raise
    logger.info("project %s: queued round %s (%s)", project, task_id, trigger)
    return QueuedRound("queued", task_id, project)


def due_projects(ledger: Ledger, minimum: int) -> list[tuple[int, int]]:
    """``(project, new corrections)`` for every project with at least ``minimum`` since its last round."""
    due = []
    for project in ledger.projects():
        count = ledger.count_since_last_round(project)
        if count >= max(1, minimum):
            due.append((project, count))
    return due


def _queue_due(app: Celery, minimum: int, trigger: Trigger) -> dict[str, Any]:
    settings = settings_of(app)
    ledger = open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
    try:
        due = due_projects(ledger, minimum)
    finally:
        ledger.close()
    locks = locks_for(settings)
    outcome: dict[str, Any] = {}
    try:
        for project, count in due:
            ticket = queue_round(app, locks, project, trigger=trigger, queue_ttl_s=settings.round_queue_ttl_s)
            outcome[str(project)] = {"new": count, "status": ticket.status, "task_id": ticket.task_id}
    finally:
        locks.client.close()
    return outcome


@shared_task(bind=True, name=CHECK_ROUNDS, ignore_result=True)  # type: ignore[untyped-decorator]
def check_rounds(self: Any) -> dict[str, Any]:
    """Queue a round for each project past the correction threshold (``round_threshold``).

    Returns:
        Project id -> ``{"new", "status", "task_id"}`` for the projects that were due.
    """
    settings = settings_of(self.app)
    if settings.round_threshold <= 0:
        return {}
    return _queue_due(self.app, settings.round_threshold, "threshold")


@shared_task(bind=True, name=SCHEDULED_ROUNDS, ignore_result=True)  # type: ignore[untyped-decorator]
def scheduled_rounds(self: Any) -> dict[str, Any]:
    """Queue a round for each project with new corrections (``round_schedule_min_new``), on the schedule.

    Returns:
        As :func:`check_rounds`.
    """
    return _queue_due(self.app, settings_of(self.app).round_schedule_min_new, "schedule")
