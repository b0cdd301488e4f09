"""The light Celery task that finishes predictions in the background: convert and post to Label Studio.

It runs in the worker process, chained after ``assistant.predict``
(``predict → backends.publish_predictions``, built by :mod:`backends.dispatch`), which passes it the
``PredictResult``. It never touches the model: it rebuilds the vocabulary from the labeling config
the job was queued with, converts the scores exactly as ``/predict`` does, and posts each task's
prediction through the SDK with the version that was current when the job was queued.

Delivered exactly once per chunk and idempotent per task:

- for ``/predict`` chunks it first claims the chunk for the background; when ``/predict`` already
  claimed it for its inline answer, it posts nothing;
- a task that already has a prediction for the job's version is skipped, so a retry (Label
  Studio down: retried with backoff), a redelivery or a second ``preannotate`` run posts nothing
  twice.

The worker imports it through its ``include`` list (``"backends.tasks"``, next to
``"workers.tasks"``); it uses ``shared_task`` so that it binds to whatever app the worker built.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Any

import redis
from celery import Task, shared_task
from pydantic import BaseModel, ConfigDict, Field

from backends.controls import parse_label_config
from backends.convert import TaskFailure, predictions_from_results
from backends.dispatch import BACKGROUND, PUBLISH_PREDICTIONS, PublishJob, claim_key
from backends.errors import BackendError
from backends.ls_client import LabelStudioClient, LabelStudioUnavailable
from backends.protocol import Task as LSTask
from backends.state import RedisState, SharedState, redis_url_of
from workers.celery_app import settings_of
from workers.contracts import PredictResult

__all__ = ["PublishReport", "publish", "publish_predictions"]

logger = logging.getLogger(__name__)

# Failures kept in full in a report (the counts cover the rest).
_FAILURES_KEPT = 20


class PublishReport(BaseModel):
    """What a publish run did (the Celery result of the task; ``preannotate`` sums them).

    Attributes:
        job_id: The job.
        chunk: The chunk.
        model_version: The version posted.
        claimed: False when ``/predict`` delivered the chunk inline (nothing posted).
        posted: Predictions created in Label Studio.
        skipped: Tasks that already had a prediction for the version.
        failed: Reason → number of tasks that got no prediction.
        failures: The first failures in full: ``{"task", "reason", "message"}``.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    chunk: int
    model_version: str
    claimed: bool = True
    posted: int = 0
    skipped: int = 0
    failed: dict[str, int] = Field(default_factory=dict)
    failures: list[dict[str, Any]] = Field(default_factory=list)


def publish(job: PublishJob, result: PredictResult, *, client: LabelStudioClient, state: SharedState) -> PublishReport:
    """Convert one chunk's result and post its predictions (the task's body, callable in tests).

    Raises:
        LabelStudioUnavailable: Label Studio failed transiently (the task retries; posted tasks
            are skipped on the retry).
    """
    if job.claim and not state.claim(claim_key(job.job_id, job.chunk), BACKGROUND):
        logger.info("job %s chunk %d: delivered inline by /predict; nothing to post", job.job_id, job.chunk)
        return PublishReport(job_id=job.job_id, chunk=job.chunk, model_version=job.model_version, claimed=False)
    vocab = parse_label_config(job.label_config)
    tasks = [LSTask(id=task_id, project=job.project) for task_id in job.task_ids]
    failures: list[TaskFailure] = []
    posted = skipped = 0
    try:
        batch = predictions_from_results(vocab, tasks, [result])
        failures.extend(batch.failures)
        pairs = list(zip(tasks, batch.predictions, strict=True))
    except BackendError as exc:  # a worker on another contract: nothing of this chunk is usable
        failures.extend(TaskFailure(t.id, "worker_result", exc.message) for t in tasks)
        pairs = []
    for task, prediction in pairs:
        if prediction is None:
            continue
        if prediction.model_version != job.model_version:
            failures.append(TaskFailure(task.id, "version_mismatch", f"scored with {prediction.model_version}"))
            continue
        if job.model_version in client.task_prediction_versions(task.id):
            skipped += 1
            continue
        client.create_prediction(task.id, prediction)
        posted += 1
    state.release(job.project, job.model_version, job.task_ids)
    counts = Counter(f.reason for f in failures)
    for failure in failures[:_FAILURES_KEPT]:
        logger.warning("task %d got no prediction (%s): %s", failure.task_id, failure.reason, failure.message)
    try:
        state.add_stats({"published": posted, "skipped": skipped, **{f"failed_{r}": n for r, n in counts.items()}})
    except redis.RedisError as exc:  # counters are for /metrics only
        logger.warning("could not update the background counters: %s", exc)
    logger.info(
        "job %s chunk %d: posted %d, skipped %d, failed %d (%s)",
        job.job_id,
        job.chunk,
        posted,
        skipped,
        len(failures),
        job.model_version,
    )
    return PublishReport(
        job_id=job.job_id,
        chunk=job.chunk,
        model_version=job.model_version,
        posted=posted,
        skipped=skipped,
        failed=dict(counts),
        failures=[{"task": f.task_id, "reason": f.reason, "message": f.message} for f in failures[:_FAILURES_KEPT]],
    )


@functools.cache
def _client(url: str, api_key: str) -> LabelStudioClient:
    # One SDK client per worker process (it caches and refreshes access tokens).
    return LabelStudioClient(url, api_key)


@functools.cache
def _state(url: str, prefix: str) -> RedisState:
    # Outside the web request path, a slow Redis may take longer than the backend's 0.5 s.
    return RedisState.from_url(url, prefix, timeout_s=5.0, retries=3)


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no types
    name=PUBLISH_PREDICTIONS,
    bind=True,
    acks_late=True,
    autoretry_for=(LabelStudioUnavailable, redis.ConnectionError, redis.TimeoutError),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def publish_predictions(self: Task, result: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Post one chunk's predictions to Label Studio (see the module docstring).

    Args:
        result: The chained ``assistant.predict`` result (a ``PredictResult`` as JSON).
        job: A :class:`~backends.dispatch.PublishJob` as JSON.

    Returns:
        A :class:`PublishReport` as JSON.
    """
    settings = settings_of(self.app)
    parsed = PublishJob.model_validate(job)
    report = publish(
        parsed,
        PredictResult.model_validate(result),
        client=_client(settings.label_studio_url, settings.label_studio_api_key.get_secret_value()),
        state=_state(redis_url_of(settings.broker_url, settings.result_backend), settings.redis_key_prefix),
    )
    return report.model_dump(mode="json")
