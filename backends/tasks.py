"""The light Celery task that finishes predictions in the background: convert and post to Label Studio.

It runs in the worker process, chained after ``assistant.predict``
(``predict → backends.publish_predictions``, built by :mod:`backends.dispatch`), which passes it the
``PredictResult``. It never touches the model: it rebuilds the vocabulary from the labeling config
the job was queued with, converts the scores exactly as ``/predict`` does, and posts each task's
prediction through the SDK with the version that was current when the job was queued.

Delivered exactly once per chunk and idempotent per task:

- for ``/predict`` chunks it first claims the chunk for the background; when ``/predict`` already
  claimed it for its inline answer, it posts nothing;
- a task that already has a prediction for the job's version, served with the same project
  calibration (the refit mark, ``backends.convert.recalibration_of``), is skipped, so a retry
  (Label Studio down: retried with backoff), a redelivery or a second ``preannotate`` run posts
  nothing twice;
- a task whose prediction for the version was served with an older calibration (the project's
  calibration was refit since, and the bulk plan queued the task again) gets that prediction
  **replaced in place** (``PATCH``: same id, so the task never shows two predictions of one
  version), and a retry finds the new mark and skips it;
- a chunk's missing predictions are stored in one request (``import_predictions``) for a
  ``preannotate`` job on a project small enough, else with one POST each;
- the check and the post of one (task, version) happen under a short Redis lock
  (``lock:post:<project>:<version>:<task>``, held by the publish message's Celery id), so two
  publishers of the same chunk running at once (a chunk queued again after Redis lost its queue
  while the first copy was still running on another worker) cannot both find the task without a
  prediction and both post. A redelivered message re-enters its own lock; a lock whose holder
  died expires after :data:`POST_LOCK_TTL_S`.

Predictions are chosen exactly as ``/predict`` chooses them, with the project's refit and guard
(``backends.serving``): the task reads them from the effort ledger (the corrections ledger's
database, ``ASSISTANT_LEDGER_URL``). When that database cannot be read the chunk is still
published, with the edit costs alone, and the counter ``policy_errors`` says so.

The worker imports it through its ``include`` list (``"backends.tasks"``, next to
``"workers.tasks"``); it uses ``shared_task`` so that it binds to whatever app the worker built.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Final

import redis
from celery import Task, shared_task
from pydantic import BaseModel, ConfigDict, Field

from backends.convert import TaskFailure, predictions_from_results, recalibration_of
from backends.dispatch import BACKGROUND, PUBLISH_PREDICTIONS, PublishJob, claim_key
from backends.errors import BackendError
from backends.serving import ServedCalibrations, ServingPolicy, load_policy
from backends.state import RedisState, SharedState
from state.contracts import PredictResult
from state.effort_records import checkpoint_of
from state.ledger import Ledger, open_ledger
from state.locks import redis_url
from state.settings import Settings
from studio.client import LabelStudioClient
from studio.config import parse_label_config
from studio.errors import LabelStudioUnavailable
from studio.protocol import Prediction
from studio.protocol import Task as LSTask
from workers.celery_app import settings_of

__all__ = [
    "POST_LOCK_TTL_S",
    "PublishBusy",
    "PublishReport",
    "client_of",
    "ledger_of",
    "publish",
    "publish_predictions",
    "state_of",
]

logger = logging.getLogger(__name__)

# Failures kept in full in a report (the counts cover the rest).
_FAILURES_KEPT = 20
#: Lifetime of a (task, version) posting lock, plus one second per task of the chunk: a chunk's
#: locks are held while its tasks are checked (~70 ms each) and its predictions stored (~10 ms
#: each); one slow call (30 s timeout) stays far below it.
POST_LOCK_TTL_S: Final = 120.0
# How long a publisher waits in-process for another one's posting lock before it gives the
# message back for a retry with backoff (the holder normally finishes within a second).
_LOCK_WAIT_S: Final = 15.0
_LOCK_POLL_S: Final = 0.1


class PublishBusy(BackendError):
    """Another publisher holds a task's posting lock: retry the chunk later."""

    default_status = 503


class PublishReport(BaseModel):
    """What a publish run did (the Celery result of the task; ``preannotate`` sums them).

    Attributes:
        job_id: The job.
        chunk: The chunk.
        model_version: The version posted.
        claimed: False when ``/predict`` delivered the chunk inline (nothing posted).
        posted: Predictions created in Label Studio.
        replaced: Predictions of the version served with an older project calibration, replaced
            in place.
        skipped: Tasks that already had a prediction for the version and calibration.
        failed: Reason → number of tasks that got no prediction.
        failures: The first failures in full: ``{"task", "reason", "message"}``.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    chunk: int
    model_version: str
    claimed: bool = True
    posted: int = 0
    replaced: int = 0
    skipped: int = 0
    failed: dict[str, int] = Field(default_factory=dict)
    failures: list[dict[str, Any]] = Field(default_factory=list)


def _post_lock(job: PublishJob, task_id: int) -> str:
    return f"post:{job.project}:{job.model_version}:{task_id}"


def _lock_or_wait(state: SharedState, name: str, owner: str, *, ttl_s: float, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not state.acquire_lock(name, owner, ttl_s):
        if time.monotonic() >= deadline:
            raise PublishBusy(
                f"another publisher is posting {name} to Label Studio",
                why="the same chunk runs twice at once (queued again after Redis lost its queue, or redelivered)",
                fix="nothing: the chunk is retried, and the task is skipped once its prediction is there",
            )
        time.sleep(_LOCK_POLL_S)


def _stale(stored: list[dict[str, Any]], prediction: Prediction) -> tuple[bool, int | None]:
    """Whether the task has ``prediction``'s version and calibration already; else its stale one to replace.

    Returns:
        (done, stale id): done when a stored prediction has the same version and refit mark; else
        the newest stored prediction of the version (another mark), if any.
    """
    mine = [p for p in stored if str(p.get("model_version") or "") == prediction.model_version]
    mark = recalibration_of(prediction.result)
    if any(recalibration_of(p.get("result") or []) == mark for p in mine):
        return True, None
    ids = [int(p["id"]) for p in mine if p.get("id") is not None]
    return False, max(ids) if ids else None


def _post_once(
    job: PublishJob,
    ready: list[tuple[int, Prediction]],
    *,
    client: LabelStudioClient,
    state: SharedState,
    owner: str,
    lock_wait_s: float,
) -> tuple[int, int, int]:
    """Post each prediction unless Label Studio has it already; (posted, replaced, skipped).

    Every task's posting lock is taken first, in ascending task order (two publishers of
    overlapping chunks then never wait on each other in a circle), then Label Studio is asked
    per task. A prediction of the version served with an older calibration is replaced in place
    (one PATCH each); what is missing is stored: in one request when the job says so
    (``import_predictions``), else with one POST per task.
    """
    held: list[str] = []
    ttl_s = POST_LOCK_TTL_S + len(ready)
    try:
        for task_id, _ in sorted(ready, key=lambda pair: pair[0]):
            lock = _post_lock(job, task_id)
            _lock_or_wait(state, lock, owner, ttl_s=ttl_s, wait_s=lock_wait_s)
            held.append(lock)
        todo: list[tuple[int, Prediction]] = []
        replaced = 0
        for task_id, prediction in ready:
            done, stale = _stale(client.task_predictions(task_id), prediction)
            if stale is not None:
                client.update_prediction(stale, prediction)
                replaced += 1
            elif not done:
                todo.append((task_id, prediction))
        if todo and job.bulk_import and job.project is not None:
            client.import_predictions(job.project, todo)
        else:
            for task_id, prediction in todo:
                client.create_prediction(task_id, prediction)
        return len(todo), replaced, len(ready) - len(todo) - replaced
    finally:
        for lock in held:
            state.release_lock(lock, owner)


def publish(
    job: PublishJob,
    result: PredictResult,
    *,
    client: LabelStudioClient,
    state: SharedState,
    owner: str | None = None,
    lock_wait_s: float = _LOCK_WAIT_S,
    policy: ServingPolicy | None = None,
) -> PublishReport:
    """Convert one chunk's result and post its predictions (the task's body, callable in tests).

    Args:
        job: The chunk.
        result: Its ``assistant.predict`` result.
        client: Label Studio.
        state: Claims, in-flight marks and posting locks.
        policy: The project's costs, refit and guard (the default costs when None).
        owner: Who holds the posting locks: the publish message's Celery id, the same for a
            redelivered message (default: a fresh id).
        lock_wait_s: How long to wait for another publisher's posting lock.

    Raises:
        LabelStudioUnavailable: Label Studio failed transiently (the task retries; posted tasks
            are skipped on the retry).
        PublishBusy: Another publisher held a task's posting lock for ``lock_wait_s`` (retried).
    """
    owner = owner or uuid.uuid4().hex
    if job.claim and not state.claim(claim_key(job.job_id, job.chunk), BACKGROUND):
        logger.info("job %s chunk %d: delivered inline by /predict; nothing to post", job.job_id, job.chunk)
        return PublishReport(job_id=job.job_id, chunk=job.chunk, model_version=job.model_version, claimed=False)
    vocab = parse_label_config(job.label_config)
    tasks = [LSTask(id=task_id, project=job.project) for task_id in job.task_ids]
    failures: list[TaskFailure] = []
    try:
        batch = predictions_from_results(vocab, tasks, [result], policy=policy)
        failures.extend(batch.failures)
        pairs = list(zip(tasks, batch.predictions, strict=True))
    except BackendError as exc:  # a worker on another contract: nothing of this chunk is usable
        failures.extend(TaskFailure(t.id, "worker_result", exc.message) for t in tasks)
        pairs = []
    ready: list[tuple[int, Prediction]] = []
    for task, prediction in pairs:
        if prediction is None:
            continue
        if prediction.model_version != job.model_version:
            failures.append(TaskFailure(task.id, "version_mismatch", f"scored with {prediction.model_version}"))
            continue
        ready.append((task.id, prediction))
    posted, replaced, skipped = _post_once(job, ready, client=client, state=state, owner=owner, lock_wait_s=lock_wait_s)
    state.release(job.project, job.model_version, job.task_ids)
    counts = Counter(f.reason for f in failures)
    for failure in failures[:_FAILURES_KEPT]:
        logger.warning("task %d got no prediction (%s): %s", failure.task_id, failure.reason, failure.message)
    try:
        state.add_stats(
            {
                "published": posted,
                "skipped": skipped,
                **({"replaced": replaced} if replaced else {}),
                **{f"failed_{r}": n for r, n in counts.items()},
            }
        )
    except redis.RedisError as exc:  # counters are for /metrics only
        logger.warning("could not update the background counters: %s", exc)
    logger.info(
        "job %s chunk %d: posted %d, replaced %d, skipped %d, failed %d (%s)",
        job.job_id,
        job.chunk,
        posted,
        replaced,
        skipped,
        len(failures),
        job.model_version,
    )
    return PublishReport(
        job_id=job.job_id,
        chunk=job.chunk,
        model_version=job.model_version,
        posted=posted,
        replaced=replaced,
        skipped=skipped,
        failed=dict(counts),
        failures=[{"task": f.task_id, "reason": f.reason, "message": f.message} for f in failures[:_FAILURES_KEPT]],
    )


@functools.cache
def _client(url: str, api_key: str) -> LabelStudioClient:
    # One SDK client per worker process (it caches and refreshes access tokens).
    return LabelStudioClient(url, api_key)


def client_of(settings: Settings) -> LabelStudioClient:
    """The worker process's Label Studio client (one per process)."""
    return _client(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())


@functools.cache
def _ledger(url: str | None, home: str, prefix: str) -> Ledger:
    # One ledger connection per worker process, shared by its publish and counting tasks.
    return open_ledger(url, home=Path(home), table_prefix=prefix)


def ledger_of(settings: Settings) -> Ledger:
    """The worker process's ledger (opened once; raises ``LedgerError`` when it cannot be)."""
    return _ledger(settings.ledger_url, str(settings.home), settings.ledger_table_prefix)


@functools.cache
def _served(url: str | None, home: str, prefix: str) -> ServedCalibrations:
    return ServedCalibrations(_ledger(url, home, prefix).effort)


def _policy(settings: Settings, job: PublishJob, result: PredictResult, state: SharedState) -> ServingPolicy:
    """The project's policy for the chunk's checkpoint; the costs alone when the ledger is away (counted)."""
    checkpoint = checkpoint_of(job.model_version)
    store, error = None, None
    try:
        store = ledger_of(settings).effort
    except Exception as exc:  # the ledger's database is down: publish with the costs alone
        logger.warning("job %s: the effort ledger cannot be opened: %s", job.job_id, exc)
        error = str(exc)
    else:
        _served(settings.ledger_url, str(settings.home), settings.ledger_table_prefix).note(
            job.project, checkpoint, result.calibration
        )
    policy, read_error = load_policy(store, settings, job.project, checkpoint)
    if error or read_error:
        with contextlib.suppress(redis.RedisError):
            state.add_stats({"policy_errors": 1})
    return policy


@functools.cache
def _state(url: str, prefix: str) -> RedisState:
    # Outside the web request path, a slow Redis may take longer than the backend's 0.5 s.
    return RedisState.from_url(url, prefix, timeout_s=5.0, retries=3)


def state_of(settings: Settings) -> RedisState:
    """The worker process's shared state (one client per process)."""
    return _state(redis_url(settings.broker_url, settings.result_backend), settings.redis_key_prefix)


# Worth another try later: Label Studio or Redis away, another publisher on the same task.
_RETRYABLE: Final = (LabelStudioUnavailable, PublishBusy, redis.ConnectionError, redis.TimeoutError)


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no types
    name=PUBLISH_PREDICTIONS,
    bind=True,
    acks_late=True,
    autoretry_for=_RETRYABLE,
    # Countdowns drawn from [0, min(120, 2 * 2**n)] s (full jitter): 8 retries wait ~3 min in all
    # on average, enough for Label Studio to restart; past that the chunk fails and a new
    # `assistant preannotate` run queues its tasks again.
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
    state = state_of(settings)
    predicted = PredictResult.model_validate(result)
    try:
        report = publish(
            parsed,
            predicted,
            client=client_of(settings),
            state=state,
            owner=self.request.id,
            policy=_policy(settings, parsed, predicted, state),
        )
    except Exception as exc:
        if not isinstance(exc, _RETRYABLE) or self.request.retries >= self.max_retries:
            # The last try: give the tasks' in-flight marks back, so that the next run queues
            # them at once instead of taking them for in flight until the marks expire (1 h).
            with contextlib.suppress(redis.RedisError):
                state.release(parsed.project, parsed.model_version, parsed.task_ids)
        raise
    return report.model_dump(mode="json")
