"""Bulk pre-annotation of a whole project (``assistant preannotate``): plan, queue, follow, summarise.

1. Read the project's labeling config and tasks from Label Studio, and the versions its tasks
   already have predictions for (one request each).
2. Work out the version: the registry's current one for the project (or ``--model-version``),
   plus the config's fingerprint, exactly what ``/setup`` answers.
3. Skip tasks that already have a prediction for that version, and tasks another job already
   covers (in flight); mark the rest in flight.
4. Queue chunked chains ``assistant.predict → backends.publish_predictions`` (no inline claim:
   the publish task posts everything), and follow them until every chunk is posted or failed.

Idempotent and resumable: a second run finds every task predicted (or in flight) and queues
nothing; an interrupted run leaves its queued chunks to finish, and the next run queues only the
tasks that are neither predicted nor in flight. The publish task skips tasks that got a
prediction for the version in the meantime, so even two overlapping runs post each task once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery.result import AsyncResult
from celery.states import READY_STATES, SUCCESS

from backends.controls import parse_label_config
from backends.convert import TaskFailure
from backends.dispatch import CeleryDispatcher, PredictJob, plan_chunks
from backends.errors import BackendError
from backends.ls_client import LabelStudioClient
from backends.predicting import checkpoint_version
from backends.state import SharedState
from workers.registry import Registry

__all__ = ["BulkPlan", "BulkProgress", "BulkRun", "plan_preannotation", "resolve_version"]

logger = logging.getLogger(__name__)


@dataclass
class BulkPlan:
    """What a run will do.

    Attributes:
        project: The Label Studio project.
        model_version: The full version posted (``<checkpoint>+<fingerprint>``).
        total: Tasks considered (all, or the unlabeled ones).
        already_predicted: Tasks that already have a prediction for the version.
        in_flight: Tasks another job already covers.
        failures: Tasks whose data has no usable image.
        job: The chunks to queue (None when there is nothing to do).
    """

    project: int
    model_version: str
    total: int
    already_predicted: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
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
) -> BulkPlan:
    """Steps 1–3 of the module docstring; marks the queued tasks in flight.

    Raises:
        LabelConfigError: The project's config has no usable image-tagging control.
        BackendError: Label Studio or the registry cannot be read, or a bad ``model_version``.
    """
    label_config = client.label_config(project)
    vocab = parse_label_config(label_config)
    checkpoint = resolve_version(registry, project, vocab.fingerprint, model_version)
    version = vocab.model_version(checkpoint)
    tasks = client.tasks(project, unlabeled_only=unlabeled_only)
    existing = client.prediction_versions(project)
    plan = BulkPlan(project=project, model_version=version, total=len(tasks))
    plan.already_predicted = [t.id for t in tasks if version in existing.get(t.id, set())]
    candidates = [t for t in tasks if version not in existing.get(t.id, set())]
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
        plan.job = PredictJob(job_id, project, version, label_config, tuple(chunks), job_id, inline=False)
    return plan


@dataclass
class BulkProgress:
    """Where a run stands (the CLI draws its progress bar from it)."""

    chunks: int
    tasks: int
    done_chunks: int = 0
    done_tasks: int = 0
    posted: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

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
        self.progress = BulkProgress(chunks=len(self.job.chunks), tasks=plan.queued)

    def start(self) -> None:
        """Queue every chunk."""
        self.ids = self.dispatcher.send(self.job)
        self.pending = set(self.ids)

    def poll(self) -> BulkProgress:
        """Check the unfinished chunks once."""
        app = self.dispatcher.app
        chunks = {c.index: c for c in self.job.chunks}
        for index in sorted(self.pending):
            predict_id, publish_id = self.ids[index]
            predicted = AsyncResult(predict_id, app=app)
            published = AsyncResult(publish_id, app=app)
            if predicted.state in READY_STATES and predicted.state != SUCCESS:
                self._fail(index, f"the predict task failed: {predicted.state}: {str(predicted.result)[:200]}")
            elif published.state == SUCCESS:
                self._report(index, published.result)
            elif published.state in READY_STATES:
                self._fail(index, f"the publish task failed: {published.state}: {str(published.result)[:200]}")
            else:
                continue
            self.pending.discard(index)
            self.progress.done_chunks += 1
            self.progress.done_tasks += len(chunks[index].task_ids)
        return self.progress

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
            time.sleep(self.poll_interval_s)

    def _report(self, index: int, result: Any) -> None:
        report = result if isinstance(result, dict) else {}
        self.progress.posted += int(report.get("posted", 0))
        self.progress.skipped += int(report.get("skipped", 0))
        self.progress.failed.update({str(k): int(v) for k, v in (report.get("failed") or {}).items()})
        self.progress.failures.extend(report.get("failures") or [])

    def _fail(self, index: int, message: str) -> None:
        chunk = next(c for c in self.job.chunks if c.index == index)
        logger.warning("%s chunk %d: %s", self.job.job_id, index, message)
        self.progress.failed["chunk_failed"] += len(chunk.task_ids)
        self.progress.failures.extend({"task": t, "reason": "chunk_failed", "message": message} for t in chunk.task_ids)
        self.dispatcher.state.release(self.job.project, self.job.model_version, chunk.task_ids)
