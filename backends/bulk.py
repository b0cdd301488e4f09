"""Bulk pre-annotation of a whole project (``assistant preannotate``): plan, queue, follow, summarise.

1. Read the project's labeling config and tasks from Label Studio, and the versions its tasks
   already have predictions for (one request each).
2. Work out the version: the registry's current one for the project (or ``--model-version``),
   plus the config's fingerprint, exactly what ``/setup`` answers.
3. Skip tasks that already have a prediction for that version, and tasks another job already
   covers (in flight); mark the rest in flight. Given the effort store, a prediction for the
   version counts only when it was served with the project's latest calibration refit of the
   checkpoint (its refit mark, ``backends.convert.recalibration_of``): an unlabeled task whose
   prediction an older calibration chose is **stale** and queued again, and the publish task
   replaces that prediction in place (``backends.tasks``). Labeled tasks keep theirs: they are
   what their annotators started from.
4. Queue chunked chains ``assistant.predict → backends.publish_predictions`` (no inline claim:
   the publish task posts everything), and follow them until every chunk is posted or failed.

Idempotent and resumable: a second run finds every task predicted (or in flight) and queues
nothing; an interrupted run leaves its queued chunks to finish, and the next run queues only the
tasks that are neither predicted nor in flight. The publish task skips tasks that got a
prediction for the version in the meantime, so even two overlapping runs post each task once.

Redis going away while a run is followed (:class:`BulkRun`):

- *unreachable*: polling keeps going (``progress.broker_down``) until Redis answers again or the
  caller's timeout passes; nothing is given up because Redis is down;
- *restarted empty* (no persistence) or flushed: the queued predict and publish messages, their
  results and the in-flight marks are gone, and no worker will ever run those chunks. The run
  notices it by its marker key (:meth:`SharedState.touch_marker`) and queues again, with new
  ids, every unfinished chunk Redis no longer knows (neither task has a state): up to
  :data:`MAX_REQUEUES` times per chunk, after which its tasks are reported failed (``lost``).
  A chunk that was still running on a worker during the restart may then run twice; its
  publish tasks post each (task, version) once (the posting lock and the check in
  ``backends.tasks``).

A run that is not followed (``--no-wait``) has no one to notice: its in-flight marks went with
Redis, so running the command again queues exactly what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import kombu.exceptions
import redis
from celery.result import AsyncResult
from celery.states import PENDING, READY_STATES, SUCCESS

from backends.convert import TaskFailure, recalibration_of
from backends.dispatch import CeleryDispatcher, PredictJob, plan_chunks
from backends.errors import BackendError
from backends.predicting import checkpoint_version
from backends.state import SharedState
from state.effort import EffortStore
from state.registry import Registry
from studio.client import LabelStudioClient
from studio.config import parse_label_config

__all__ = [
    "BULK_IMPORT_MAX_TASKS",
    "MAX_REQUEUES",
    "BulkPlan",
    "BulkProgress",
    "BulkRun",
    "plan_preannotation",
    "resolve_version",
]

logger = logging.getLogger(__name__)

#: Times a chunk is queued again after Redis lost it before its tasks are reported failed.
MAX_REQUEUES: Final = 3
#: Largest project whose chunks are stored in one request each (``import_predictions``).
#: Label Studio 1.23 refreshes the counters of every task of the project on each import, so its
#: cost grows with the project; one POST per prediction does not. Measured on 2 loaded cores,
#: SQLite, 32 predictions: one import 0.7 s (500 tasks), 1.3 s (2,000), 3.6 s (5,000), 7.5 s
#: (10,000); 32 POSTs 5.8-6.9 s whatever the size. Past ~8,000 tasks the POSTs win.
BULK_IMPORT_MAX_TASKS: Final = 5000
# The run's marker outlives a poll interval by far; every poll renews it.
_MARKER_TTL_S: Final = 3600
# Result reads a second a followed run may make (two per unfinished chunk and poll), and the
# longest pause between two polls.
_READS_PER_S: Final = 200
_MAX_POLL_INTERVAL_S: Final = 5.0
# What a poll meets while Redis is away (redis-py directly, or wrapped by kombu/celery).
_REDIS_DOWN = (redis.RedisError, kombu.exceptions.OperationalError, ConnectionError, TimeoutError)


@dataclass
class BulkPlan:
    """What a run will do.

    Attributes:
        project: The Label Studio project.
        model_version: The full version posted (``<checkpoint>+<fingerprint>``).
        total: Tasks considered (all, or the unlabeled ones).
        already_predicted: Tasks that already have a prediction for the version (and calibration).
        stale: Unlabeled tasks queued again because an older calibration chose their prediction
            (replaced in place).
        in_flight: Tasks another job already covers.
        calibration: The project's refit serving the version (``r<seq>``; None: the model's own).
        failures: Tasks whose data has no usable image.
        job: The chunks to queue (None when there is nothing to do).
    """

    project: int
    model_version: str
    total: int
    already_predicted: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    calibration: str | None = None
    failures: list[TaskFailure] = field(default_factory=list)
    job: PredictJob | None = None

    @property
    def queued(self) -> int:
        """Tasks queued by this run."""
        return 0 if self.job is None else sum(len(c.task_ids) for c in self.job.chunks)


def resolve_version(registry: Registry, project: int, fingerprint: str, requested: str | None) -> str:
    """The checkpoint version to predict with: ``requested`` (checkpoint or full string) or the current one.

    Raises:
        BackendError: ``requested`` is unknown to the registry, or a full string whose fingerprint
            is not the labeling config's.
    """
    if requested is None:
        return checkpoint_version(registry, project)
    checkpoint, _, wanted = requested.partition("+")
    if wanted and wanted != fingerprint:
        raise BackendError(
            f"--model-version {requested} was served for another labeling config",
            why=f"the project's config now has the fingerprint {fingerprint}, not {wanted}",
            fix=f"pass the checkpoint part only (--model-version {checkpoint}) to predict with the current config",
        )
    try:
        return registry.get(checkpoint).version
    except Exception as exc:
        raise BackendError(
            f"unknown model version {checkpoint!r}", why=str(exc), fix="see `assistant models list`"
        ) from exc


def plan_preannotation(
    client: LabelStudioClient,
    registry: Registry,
    state: SharedState,
    *,
    project: int,
    unlabeled_only: bool = False,
    model_version: str | None = None,
    chunk_size: int = 32,
    store: EffortStore | None = None,
) -> BulkPlan:
    """Steps 1–3 of the module docstring; marks the queued tasks in flight.

    Args:
        store: The effort store: with it, predictions an older project calibration chose are
            replaced; without it, any prediction for the version counts.

    Raises:
        LabelConfigError: The project's config has no usable image-tagging control.
        BackendError: Label Studio or the registry cannot be read, or a bad ``model_version``.
    """
    label_config = client.label_config(project)
    vocab = parse_label_config(label_config)
    checkpoint = resolve_version(registry, project, vocab.fingerprint, model_version)
    version = vocab.model_version(checkpoint)
    tasks = client.tasks(project, unlabeled_only=unlabeled_only)
    marks = _calibration_marks(client.predictions(project), version)
    plan = BulkPlan(project=project, model_version=version, total=len(tasks))
    stale: set[int] = set()
    if store is not None:
        refit = store.last_refit(project, checkpoint, fitted_only=True)
        plan.calibration = None if refit is None else refit.id
        stale = {t.id for t in tasks if t.id in marks and plan.calibration not in marks[t.id]}
        if stale and not unlabeled_only:
            stale &= {t.id for t in client.tasks(project, unlabeled_only=True)}
        plan.stale = sorted(stale)
    plan.already_predicted = [t.id for t in tasks if t.id in marks and t.id not in stale]
    candidates = [t for t in tasks if t.id not in marks or t.id in stale]
    fresh = set(state.reserve(project, version, [t.id for t in candidates]))
    plan.in_flight = [t.id for t in candidates if t.id not in fresh]
    todo = [t for t in candidates if t.id in fresh]
    job_id = f"bulk-{uuid.uuid4().hex[:12]}"
    chunks, plan.failures = plan_chunks(
        vocab, todo, project=project, checkpoint_version=checkpoint, chunk_size=chunk_size, request_id=job_id
    )
    state.release(project, version, [f.task_id for f in plan.failures])
    state.record_version(project, version)
    if chunks:
        size = client.task_count(project)
        bulk_import = size is not None and size <= BULK_IMPORT_MAX_TASKS
        plan.job = PredictJob(
            job_id, project, version, label_config, tuple(chunks), job_id, inline=False, bulk_import=bulk_import
        )
    return plan


def _calibration_marks(predictions: list[dict[str, Any]], version: str) -> dict[int, set[str | None]]:
    """Task id → the refit marks of its predictions for ``version`` (None: the model's own calibration)."""
    out: dict[int, set[str | None]] = {}
    for pred in predictions:
        if str(pred.get("model_version") or "") == version and pred.get("task") is not None:
            out.setdefault(int(pred["task"]), set()).add(recalibration_of(pred.get("result") or []))
    return out


@dataclass
class BulkProgress:
    """Where a run stands (the CLI draws its progress bar from it)."""

    chunks: int
    tasks: int
    done_chunks: int = 0
    done_tasks: int = 0
    posted: int = 0
    replaced: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Whether the last poll could not reach Redis.
    broker_down: bool = False
    #: Times Redis was found to have lost its data during the run.
    redis_losses: int = 0
    #: Chunks and tasks queued again after Redis lost them.
    requeued_chunks: int = 0
    requeued_tasks: int = 0

    @property
    def finished(self) -> bool:
        """Every chunk is posted or failed."""
        return self.done_chunks >= self.chunks


class BulkRun:
    """Queues a plan's chunks and follows them.

    Args:
        dispatcher: Sends the chains.
        plan: What to queue (``plan.job`` must be set).
        poll_interval_s: Seconds between polls.
    """

    def __init__(self, dispatcher: CeleryDispatcher, plan: BulkPlan, *, poll_interval_s: float = 0.5) -> None:
        if plan.job is None:
            raise ValueError("the plan has nothing to queue")
        self.dispatcher = dispatcher
        self.plan = plan
        self.job: PredictJob = plan.job
        self.poll_interval_s = poll_interval_s
        self.ids: dict[int, tuple[str, str]] = {}
        self.pending: set[int] = set()
        self.requeues: Counter[int] = Counter()
        self.progress = BulkProgress(chunks=len(self.job.chunks), tasks=plan.queued)
        self._chunks = {c.index: c for c in self.job.chunks}
        self._marker = f"bulk:{self.job.job_id}"
        self._lost = False

    def start(self) -> None:
        """Queue every chunk."""
        self.dispatcher.state.touch_marker(self._marker, _MARKER_TTL_S)
        self.ids = self.dispatcher.send(self.job)
        self.pending = set(self.ids)

    def poll(self) -> BulkProgress:
        """Check the unfinished chunks once (see the module docstring for Redis going away)."""
        try:
            states = self._states()
        except _REDIS_DOWN as exc:
            if not self.progress.broker_down:
                logger.warning("%s: Redis is unreachable (%s); waiting for it", self.job.job_id, exc)
            self.progress.broker_down = True
            return self.progress
        if self.progress.broker_down:
            logger.info("%s: Redis answers again", self.job.job_id)
        self.progress.broker_down = False
        for index, (predicted, predict_state, published, publish_state) in states.items():
            if predict_state in READY_STATES and predict_state != SUCCESS:
                self._fail(index, f"the predict task failed: {predict_state}: {str(predicted.result)[:200]}")
            elif publish_state == SUCCESS:
                self._report(index, published.result)
            elif publish_state in READY_STATES:
                self._fail(index, f"the publish task failed: {publish_state}: {str(published.result)[:200]}")
            else:
                continue
            self._done(index)
        return self.progress

    def _states(self) -> dict[int, tuple[AsyncResult, str, AsyncResult, str]]:
        """Each unfinished chunk's (predict result, state, publish result, state), after queuing
        again what Redis lost. Raises while Redis is away."""
        app = self.dispatcher.app
        if not self.dispatcher.state.touch_marker(self._marker, _MARKER_TTL_S):
            self._lost = True  # cleared only once the lost chunks are queued again
        states: dict[int, tuple[AsyncResult, str, AsyncResult, str]] = {}
        for index in sorted(self.pending):
            predict_id, publish_id = self.ids[index]
            predicted, published = AsyncResult(predict_id, app=app), AsyncResult(publish_id, app=app)
            states[index] = (predicted, predicted.state, published, published.state)
        if self._lost:
            # Neither task has a state: the messages were lost with Redis (a chunk running on a
            # worker right now looks the same; running it twice posts nothing twice).
            unknown = [i for i, (_, a, _, b) in states.items() if a == PENDING and b == PENDING]
            self._requeue(unknown)
            self._lost = False
            for index in unknown:
                del states[index]
        return states

    def _requeue(self, indexes: list[int]) -> None:
        """Queue again the chunks Redis lost (new ids), or fail those queued too often already."""
        self.progress.redis_losses += 1
        again = [i for i in indexes if self.requeues[i] < MAX_REQUEUES]
        for index in indexes:
            if index not in again:
                self._fail(index, f"Redis lost this chunk {MAX_REQUEUES + 1} times", reason="lost")
                self._done(index)
        logger.warning(
            "%s: Redis lost its data (restarted without persistence, or flushed); queuing %d unfinished chunks again",
            self.job.job_id,
            len(again),
        )
        if not again:
            return
        chunks = tuple(self._chunks[i] for i in again)
        for chunk in chunks:
            self.dispatcher.state.reserve(self.job.project, self.job.model_version, chunk.task_ids)
        self.ids.update(self.dispatcher.send(dataclasses.replace(self.job, chunks=chunks)))
        self.requeues.update(again)
        self.progress.requeued_chunks += len(again)
        self.progress.requeued_tasks += sum(len(c.task_ids) for c in chunks)

    def _done(self, index: int) -> None:
        self.pending.discard(index)
        self.progress.done_chunks += 1
        self.progress.done_tasks += len(self._chunks[index].task_ids)

    def wait(
        self, *, timeout_s: float | None = None, on_progress: Callable[[BulkProgress], None] | None = None
    ) -> BulkProgress:
        """Poll until every chunk finished or ``timeout_s`` passed (queued chunks keep running)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            progress = self.poll()
            if on_progress is not None:
                on_progress(progress)
            if progress.finished or (deadline is not None and time.monotonic() >= deadline):
                return progress
            time.sleep(self._interval())

    def _interval(self) -> float:
        """Seconds to the next poll: a poll reads two results per unfinished chunk, so a large run
        polls less often (10,000 tasks in 313 chunks: every 3 s, not 1,250 Redis reads a second,
        which took ~18% of a core in the soak), at most every :data:`_MAX_POLL_INTERVAL_S`."""
        return min(max(self.poll_interval_s, 2 * len(self.pending) / _READS_PER_S), _MAX_POLL_INTERVAL_S)

    def _report(self, index: int, result: Any) -> None:
        report = result if isinstance(result, dict) else {}
        self.progress.posted += int(report.get("posted", 0))
        self.progress.replaced += int(report.get("replaced", 0))
        self.progress.skipped += int(report.get("skipped", 0))
        self.progress.failed.update({str(k): int(v) for k, v in (report.get("failed") or {}).items()})
        self.progress.failures.extend(report.get("failures") or [])

    def _fail(self, index: int, message: str, *, reason: str = "chunk_failed") -> None:
        chunk = self._chunks[index]
        logger.warning("%s chunk %d: %s", self.job.job_id, index, message)
        self.progress.failed[reason] += len(chunk.task_ids)
        self.progress.failures.extend({"task": t, "reason": reason, "message": message} for t in chunk.task_ids)
        self.dispatcher.state.release(self.job.project, self.job.model_version, chunk.task_ids)
