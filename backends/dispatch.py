"""Sending work to the Celery workers by task name: prediction chunks, their background publication, rounds.

**Prediction jobs.** A job's tasks are cut into chunks of at most ``predict_chunk_size`` images
(a task is never split, so its images are scored by one worker with one model version). Every
chunk is sent as the chain ``assistant.predict → backends.publish_predictions`` and all chunks run
in parallel on whatever workers there are. ``/predict`` then waits up to its budget:

- a chunk whose result arrives in time is *claimed* for the inline answer (``SET NX`` on
  ``claim:<job>:<chunk>``); the chained publish task finds the claim taken and posts nothing;
- a chunk still running at the deadline is left to the publish task, which claims it for the
  background and writes its predictions to Label Studio through the SDK;
- whichever claims first wins, so each chunk is delivered exactly once, inline or in the
  background, and nothing is dropped.

The publish tasks of a ``/predict`` job carry an ETA of the inline deadline plus one second: a
chunk that finishes in time is answered inline (the publish task, started right after the
predict task, would otherwise often claim it first and the user would see the prediction only
on the next refresh), and one that finishes late is published as soon as it finishes.

``backends`` never imports the task functions: it sends names (``contracts.PREDICT`` and
:data:`PUBLISH_PREDICTIONS`); the worker process imports ``workers.tasks`` and ``backends.tasks``
through its ``include`` list.

**Rounds.** ``START_TRAINING`` queues ``contracts.TRAIN_ROUND`` on the ``train`` queue under the
per-project round lock (``state.locks``, shared with the workers) holding the round's Celery id,
so at most one round per project is queued or running. A queued round's lock lasts
``round_lock_ttl_s``; the worker running it switches it to a short TTL renewed by a heartbeat,
so a lock whose holder died expires within a minute. A lock whose task has finished (SUCCESS,
FAILURE, REVOKED) is stale and is taken over.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from celery import Celery, chain
from celery.result import AsyncResult
from celery.states import READY_STATES, STARTED, SUCCESS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends.convert import TaskFailure, build_predict_requests
from backends.state import SharedState
from state.contracts import (
    COUNT_EFFORT,
    MAX_IMAGES,
    PREDICT,
    TRAIN_ROUND,
    PredictRequest,
    PredictResult,
    RoundRequest,
)
from studio.controls import ProjectVocabulary
from studio.protocol import Task

__all__ = [
    "COUNT_EFFORT",
    "COUNT_QUEUED_TTL_S",
    "PUBLISH_PREDICTIONS",
    "CeleryDispatcher",
    "Chunk",
    "DispatchOutcome",
    "Dispatcher",
    "PredictJob",
    "PublishJob",
    "RoundTicket",
    "Trigger",
    "claim_key",
    "plan_chunks",
]

logger = logging.getLogger(__name__)

#: Name of the light Celery task (``backends.tasks``) that posts a chunk's predictions to LS.
PUBLISH_PREDICTIONS: Final = "backends.publish_predictions"

INLINE: Final = "inline"
#: What asked for a round (``RoundRequest.trigger``).
Trigger = Literal["manual", "threshold", "schedule", "start_training", "agent"]
BACKGROUND: Final = "background"
#: Seconds a "count queued" mark lasts: a count message that waits longer (a busy or absent
#: worker) lets the next annotation ask again.
COUNT_QUEUED_TTL_S: Final = 30.0
# Seconds the publish tasks of an inline job wait past the caller's deadline before claiming.
_PUBLISH_GRACE_S: Final = 1.0
# How the worker sends a chunk's publish message once its predict task has finished. Celery's
# default gives up after 3 tries within 0.6 s: a Redis restart then drops the publish message and
# the chunk's scores with it (measured: tests/integration/test_faults_redis.py). 60 tries up to
# 2 s apart ride out ~2 minutes of Redis being away; the worker has nothing else to do meanwhile.
_CALLBACK_RETRY_POLICY: Final = {"max_retries": 60, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}


class PublishJob(BaseModel):
    """What the publish task needs besides the predict result: the message it is chained with.

    Attributes:
        job_id: The job (one ``/predict`` call or one ``preannotate`` run).
        chunk: The chunk's index in the job.
        project: Label Studio project id.
        model_version: The full version string (``<checkpoint>+<fingerprint>``) current when the
            job was queued; every prediction is posted with it.
        label_config: The labeling config the requests were built from (for the conversion).
        task_ids: The chunk's tasks, in order.
        claim: Whether ``/predict`` may deliver the chunk inline (then both race for the claim);
            False for bulk jobs, which only the publish task delivers.
        request_id: For the logs.
        bulk_import: Store the chunk's predictions in one request (``import_predictions``)
            rather than one POST each: set by ``preannotate`` for projects small enough (see
            ``backends.bulk.BULK_IMPORT_MAX_TASKS``).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    chunk: int
    project: int | None
    model_version: str
    label_config: str
    task_ids: list[int] = Field(min_length=1)
    claim: bool = True
    request_id: str | None = None
    bulk_import: bool = False


def claim_key(job_id: str, chunk: int) -> str:
    """The claim key of one chunk (the inline answer and the publish task race for it)."""
    return f"{job_id}:{chunk}"


@dataclass(frozen=True)
class Chunk:
    """One worker message: some tasks and the request scoring their images."""

    index: int
    task_ids: tuple[int, ...]
    request: PredictRequest


@dataclass(frozen=True)
class PredictJob:
    """A batch of chunks to predict for one project, vocabulary and model version."""

    job_id: str
    project: int | None
    model_version: str
    label_config: str
    chunks: tuple[Chunk, ...]
    request_id: str | None = None
    #: Whether the caller waits for results (``/predict``) or not (bulk pre-annotation).
    inline: bool = True
    #: Whether the publish tasks store a chunk in one request (:attr:`PublishJob.bulk_import`).
    bulk_import: bool = False

    def publish_job(self, chunk: Chunk) -> PublishJob:
        """The publish task's arguments for one chunk."""
        return PublishJob(
            job_id=self.job_id,
            chunk=chunk.index,
            project=self.project,
            model_version=self.model_version,
            label_config=self.label_config,
            task_ids=list(chunk.task_ids),
            claim=self.inline,
            request_id=self.request_id,
            bulk_import=self.bulk_import,
        )


@dataclass
class DispatchOutcome:
    """What became of a job's chunks.

    Attributes:
        inline: Chunk index → result, for chunks claimed for the inline answer.
        background: Chunks left to the publish task (still running at the deadline, or claimed
            by it first).
        failed: Chunk index → error, for chunks whose predict task failed.
        handles: Chunk index → the Celery id of its chain's last task (the publish task).
    """

    inline: dict[int, PredictResult] = field(default_factory=dict)
    background: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    handles: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundTicket:
    """The answer to a round request: queued now, or one is already queued or running."""

    status: Literal["queued", "already_queued", "already_running"]
    task_id: str
    project: int


class Dispatcher(Protocol):
    """How the app reaches the workers (a fake in the contract tests)."""

    state: SharedState

    def predict(self, job: PredictJob, *, wait_s: float) -> DispatchOutcome:
        """Send every chunk; wait up to ``wait_s`` for results to claim for the inline answer."""
        ...

    def queue_round(
        self, project: int, *, trigger: Trigger = "start_training", request_id: str | None = None
    ) -> RoundTicket:
        """Queue a fine-tuning round unless one is already queued or running."""
        ...

    def count_effort(self, project: int) -> None:
        """Ask a worker to count the project's new annotations (``backends.effort``)."""
        ...


def plan_chunks(
    vocab: ProjectVocabulary,
    tasks: Sequence[Task],
    *,
    project: int | None,
    checkpoint_version: str,
    chunk_size: int,
    request_id: str | None = None,
) -> tuple[list[Chunk], list[TaskFailure]]:
    """Cut tasks into chunks of at most ``chunk_size`` images, never splitting a task.

    The requests pin ``checkpoint_version`` so that the worker scores with the version that was
    current when the job was built, whatever gets promoted meanwhile.

    Returns:
        The chunks, and the tasks whose data cannot be turned into image references.
    """
    per_task = max(1, len(vocab.value_keys))
    tasks_per_chunk = max(1, min(chunk_size, MAX_IMAGES) // per_task)
    chunks: list[Chunk] = []
    failures: list[TaskFailure] = []
    for start in range(0, len(tasks), tasks_per_chunk):
        group = tasks[start : start + tasks_per_chunk]
        requests, failed = build_predict_requests(
            vocab,
            group,
            project=project,
            model_version=checkpoint_version,
            request_id=request_id,
            chunk_size=MAX_IMAGES,
        )
        failures.extend(failed)
        if requests:
            bad = {f.task_id for f in failed}
            ids = tuple(t.id for t in group if t.id not in bad)
            chunks.append(Chunk(index=len(chunks), task_ids=ids, request=requests[0]))
    return chunks, failures


class CeleryDispatcher:
    """:class:`Dispatcher` over a Celery app (Redis broker) and the shared Redis state.

    Args:
        app: A Celery app from ``workers.celery_app.make_celery`` (no task modules needed).
        state: Claims, in-flight marks and round locks.
        predict_queue: Queue of ``assistant.predict``.
        publish_queue: Queue of the publish task (any worker including ``backends.tasks``).
        train_queue: Queue of rounds.
        poll_interval_s: Seconds between polls of the results while waiting.
        round_lock_ttl_s: Lifetime of a round lock.
        predict_task: Name of the predict task (tests register stand-ins under other names).
        publish_task: Name of the publish task.
    """

    def __init__(
        self,
        app: Celery,
        state: SharedState,
        *,
        predict_queue: str,
        publish_queue: str,
        train_queue: str,
        poll_interval_s: float = 0.05,
        round_lock_ttl_s: int = 6 * 3600,
        predict_task: str = PREDICT,
        publish_task: str = PUBLISH_PREDICTIONS,
    ) -> None:
        self.app = app
        self.predict_task = predict_task
        self.publish_task = publish_task
        self.state = state
        self.predict_queue = predict_queue
        self.publish_queue = publish_queue
        self.train_queue = train_queue
        self.poll_interval_s = poll_interval_s
        self.round_lock_ttl_s = round_lock_ttl_s

    # --- predictions ------------------------------------------------------------------------------
    def send(self, job: PredictJob, *, wait_s: float = 0.0) -> dict[int, tuple[str, str]]:
        """Send every chunk as ``predict → publish``; chunk index → (predict id, publish id).

        Args:
            job: The chunks.
            wait_s: How long the caller will wait to claim results inline. The publish tasks
                of an inline job do not start before then (plus a grace second): a chunk that
                finishes in time is then always answered inline rather than raced for, and one
                that finishes late is published as soon as it finishes.
        """
        ids: dict[int, tuple[str, str]] = {}
        not_before = None
        if job.inline and wait_s > 0:
            not_before = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait_s + _PUBLISH_GRACE_S)
        for chunk in job.chunks:
            predict_id, publish_id = uuid.uuid4().hex, uuid.uuid4().hex
            predict = self.app.signature(
                self.predict_task, kwargs=chunk.request.model_dump(mode="json"), queue=self.predict_queue
            ).set(task_id=predict_id)
            publish = self.app.signature(
                self.publish_task,
                kwargs={"job": job.publish_job(chunk).model_dump(mode="json")},
                queue=self.publish_queue,
            ).set(task_id=publish_id, retry_policy=dict(_CALLBACK_RETRY_POLICY))
            if not_before is not None:
                publish = publish.set(eta=not_before)
            chain(predict, publish).apply_async()
            ids[chunk.index] = (predict_id, publish_id)
        logger.info(
            "job %s: queued %d chunks (%d tasks) for %s",
            job.job_id,
            len(job.chunks),
            sum(len(c.task_ids) for c in job.chunks),
            job.model_version,
        )
        return ids

    def predict(self, job: PredictJob, *, wait_s: float) -> DispatchOutcome:
        """See :meth:`Dispatcher.predict`. Blocking: call it from a worker thread."""
        ids = self.send(job, wait_s=wait_s)
        outcome = DispatchOutcome(handles={index: pair[1] for index, pair in ids.items()})
        chunks = {c.index: c for c in job.chunks}
        pending = {index: AsyncResult(pair[0], app=self.app) for index, pair in ids.items()}
        deadline = time.monotonic() + wait_s
        while pending and job.inline and time.monotonic() < deadline:
            for index, result in list(pending.items()):
                state = result.state
                if state not in READY_STATES:
                    continue
                del pending[index]
                self._settle(job, chunks[index], result, state, outcome)
            if pending:
                time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))
        outcome.background.extend(sorted(pending))
        return outcome

    def _settle(self, job: PredictJob, chunk: Chunk, result: AsyncResult, state: str, outcome: DispatchOutcome) -> None:
        if state != SUCCESS:
            outcome.failed[chunk.index] = f"{state}: {str(result.result)[:300]}"
            self.state.release(job.project, job.model_version, chunk.task_ids)
            return
        if not self.state.claim(claim_key(job.job_id, chunk.index), INLINE):
            outcome.background.append(chunk.index)  # the publish task got there first
            return
        try:
            outcome.inline[chunk.index] = PredictResult.model_validate(result.result)
        except ValidationError as exc:
            outcome.failed[chunk.index] = f"the worker's result does not validate: {exc.error_count()} errors"
        self.state.release(job.project, job.model_version, chunk.task_ids)

    # --- effort -----------------------------------------------------------------------------------
    def count_effort(self, project: int) -> None:
        """See :meth:`Dispatcher.count_effort`: one message on the publish queue, unless one waits already.

        A burst of annotations (a bulk import, a busy team) asks once: a short mark
        (``lock:count-queued:<project>``, :data:`COUNT_QUEUED_TTL_S`) says a count is queued, and
        the task removes it when it starts, so an annotation arriving after that asks again. Not
        retried: the ledger rows it is about are recorded, and the beat's pass counts them.
        """
        token = uuid.uuid4().hex
        if not self.state.acquire_lock(f"count-queued:{project}", token, COUNT_QUEUED_TTL_S):
            return  # a queued count will see this project's new rows
        kwargs = {"project": project, "token": token}
        self.app.send_task(COUNT_EFFORT, kwargs=kwargs, queue=self.publish_queue, retry=False)

    # --- rounds -----------------------------------------------------------------------------------
    def queue_round(
        self, project: int, *, trigger: Trigger = "start_training", request_id: str | None = None
    ) -> RoundTicket:
        """See :meth:`Dispatcher.queue_round`."""
        task_id = uuid.uuid4().hex
        holder = self.state.acquire_round_lock(project, task_id, self.round_lock_ttl_s)
        if holder is not None:
            state = AsyncResult(holder, app=self.app).state
            if state not in READY_STATES or not self.state.replace_round_lock(
                project, holder, task_id, self.round_lock_ttl_s
            ):
                status: Literal["already_queued", "already_running"] = (
                    "already_running" if state == STARTED else "already_queued"
                )
                return RoundTicket(status=status, task_id=holder, project=project)
            logger.info(
                "project %s: the round lock of finished task %s (%s) is stale; taken over", project, holder, state
            )
        request = RoundRequest(project=project, trigger=trigger, request_id=request_id)
        try:
            self.app.send_task(
                TRAIN_ROUND, kwargs=request.model_dump(mode="json"), queue=self.train_queue, task_id=task_id
            )
        except Exception:
            self.state.release_round_lock(project, task_id)
            raise
        logger.info("project %s: queued round %s (%s)", project, task_id, trigger)
        return RoundTicket(status="queued", task_id=task_id, project=project)
