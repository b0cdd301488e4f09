"""``/predict``: labeling config → vocabulary → chunks → workers → one Label Studio result per task.

The answer always has exactly one entry per task, in task order (Label Studio saves nothing when
the counts differ, and falls back to one request per task when it gets a single result):

- a prediction for each task whose chunk finished within the budget;
- ``[]`` for every other task. Label Studio iterates that empty list and saves nothing for the
  task (pinned by ``tests/integration/test_ls_harness.py``), so the task stays "unpredicted" for
  this version: the background publish task posts its prediction later, and a retrieval in the
  meantime does not queue it again (it is marked in flight).

``{"results": []}`` would do for the all-background case too, but Label Studio logs it as an error
("ML backend returned empty prediction"); the per-task ``[]`` keeps its log clean and the shape
the same whatever happened.

With no worker consuming the predict queue (``backends.presence``), nothing is waited for: the
answer comes at once, every task ``[]``, with a ``warning`` saying so and how to fix it (start
``assistant worker``); the chunks stay queued for the background publisher.

Failed images (and tasks whose data has no usable image) get ``[]`` as well, are logged with the
reason and counted in ``assistant_backend_failed_tasks_total{reason}``; Label Studio sends them
again on the next retrieval.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.convert import TaskFailure, predictions_from_results
from backends.dispatch import Dispatcher, PredictJob, plan_chunks
from backends.errors import BackendError
from backends.metrics import BackendMetrics
from backends.presence import QueueConsumers, no_worker_message
from backends.serving import ServedCalibrations, load_policy
from backends.settings import BackendSettings
from state.effort import EffortStore
from state.effort_records import checkpoint_of
from state.registry import Registry
from studio.config import parse_label_config
from studio.controls import ProjectVocabulary
from studio.errors import LabelConfigError
from studio.protocol import LSPredictRequest, Prediction, Task

__all__ = ["PredictAnswer", "Predictor", "checkpoint_version"]

logger = logging.getLogger(__name__)


@dataclass
class PredictAnswer:
    """The ``/predict`` answer and what happened to each task.

    Attributes:
        results: One entry per task: a prediction dict, or ``[]``.
        model_version: The version every prediction carries.
        inline: Tasks answered with a prediction.
        background: Tasks left to the background publish task.
        in_flight: Tasks not queued again because an earlier job covers them.
        failures: Tasks that got no prediction, with the reason.
        job_id: The job's id (in the logs of the backend and the workers).
        warning: Why nothing could be answered inline, for people (e.g. no worker online).
    """

    results: list[dict[str, Any] | list[Any]]
    model_version: str
    inline: int = 0
    background: int = 0
    in_flight: int = 0
    failures: list[TaskFailure] = field(default_factory=list)
    job_id: str = ""
    warning: str | None = None


def checkpoint_version(registry: Registry, project: int | None) -> str:
    """The checkpoint version serving ``project`` (the base model's when it has none).

    Raises:
        BackendError: The registry cannot be read (503: our fault, retry later).
    """
    try:
        return registry.current(project).version
    except Exception as exc:  # RegistryError, OSError: both mean "cannot tell the version now"
        raise BackendError(
            "cannot read the model registry",
            why=str(exc),
            fix="check ASSISTANT_HOME (the registry lives in <home>/models) and the base model path",
            status_code=503,
        ) from exc


class Predictor:
    """The ``/predict`` use case (``backends.bulk`` plans ``assistant preannotate`` the same way).

    Args:
        settings: Budget, chunk size, limits.
        dispatcher: Reaches the workers.
        registry: The model registry (current version per project).
        metrics: Where to count predictions, background tasks and failures.
        effort: The effort ledger: the project's refit and guard (``backends.serving``); None
            serves with the edit costs alone.
        consumers: Which queues the workers consume (``backends.presence``); None: assume a
            worker is there and wait.
    """

    def __init__(
        self,
        settings: BackendSettings,
        dispatcher: Dispatcher,
        registry: Registry,
        metrics: BackendMetrics,
        effort: EffortStore | None = None,
        consumers: QueueConsumers | None = None,
    ) -> None:
        self.settings = settings
        self.consumers = consumers
        self.dispatcher = dispatcher
        self.registry = registry
        self.metrics = metrics
        self.effort = effort
        self.served = ServedCalibrations(effort)

    def predict(self, request: LSPredictRequest, request_id: str | None = None) -> PredictAnswer:
        """Answer one ``/predict`` call (blocking up to the inline budget).

        Raises:
            LabelConfigError: No or unusable labeling config.
            BackendError: The registry cannot be read.
        """
        tasks = request.tasks
        if not request.label_config:
            raise LabelConfigError(
                "the /predict body has no label_config", fix="send the project's labeling config as label_config"
            )
        vocab = parse_label_config(request.label_config)
        project = request.project if request.project is not None else next((t.project for t in tasks), None)
        checkpoint = checkpoint_version(self.registry, project)
        version = vocab.model_version(checkpoint)
        answer = PredictAnswer(results=[[] for _ in tasks], model_version=version, job_id=uuid.uuid4().hex[:16])
        if not tasks:
            return answer
        fresh = set(self.dispatcher.state.reserve(project, version, [t.id for t in tasks]))
        answer.in_flight = len(tasks) - len(fresh)
        todo = [t for t in tasks if t.id in fresh]
        chunks, failures = plan_chunks(
            vocab,
            todo,
            project=project,
            checkpoint_version=checkpoint,
            chunk_size=self.settings.predict_chunk_size,
            request_id=request_id,
        )
        self.dispatcher.state.release(project, version, [f.task_id for f in failures])
        answer.failures.extend(failures)
        if chunks:
            self._run(
                vocab,
                tasks,
                answer,
                PredictJob(answer.job_id, project, version, request.label_config, tuple(chunks), request_id),
            )
        self._count(answer)
        return answer

    def _wait_s(self, n_tasks: int, answer: PredictAnswer) -> float:
        if n_tasks > self.settings.predict_inline_max_tasks or self.settings.predict_inline_budget_s <= 0:
            return 0.0
        queue = self.settings.predict_queue
        if self.consumers is not None and self.consumers.consumed(queue) is False:
            # Waiting would only run out the budget (60 s) and answer nothing (issue 16, 6c).
            answer.warning = no_worker_message(queue)
            logger.warning("job %s: %s", answer.job_id, answer.warning)
            return 0.0
        return self.settings.predict_inline_budget_s

    def _run(self, vocab: ProjectVocabulary, tasks: Sequence[Task], answer: PredictAnswer, job: PredictJob) -> None:
        outcome = self.dispatcher.predict(job, wait_s=self._wait_s(len(tasks), answer))
        chunks = {c.index: c for c in job.chunks}
        answer.background = sum(len(chunks[i].task_ids) for i in outcome.background)
        for index, error in outcome.failed.items():
            logger.warning("job %s: chunk %d failed on the worker: %s", job.job_id, index, error)
            answer.failures.extend(TaskFailure(t, "worker_error", error) for t in chunks[index].task_ids)
        done = {t for i in outcome.inline for t in chunks[i].task_ids}
        if not done:
            return
        inline_tasks = [t for t in tasks if t.id in done]
        checkpoint = checkpoint_of(job.model_version)
        policy, policy_error = load_policy(self.effort, self.settings, job.project, checkpoint)
        if policy_error is not None:
            self.metrics.policy_errors.inc()
        for result in outcome.inline.values():
            self.served.note(job.project, checkpoint, result.calibration)
        try:
            batch = predictions_from_results(vocab, inline_tasks, outcome.inline.values(), policy=policy)
        except BackendError as exc:  # WorkerResultError: a worker on another contract
            logger.error("job %s: %s", job.job_id, exc.message)
            answer.failures.extend(TaskFailure(t.id, "worker_result", exc.message) for t in inline_tasks)
            return
        answer.failures.extend(batch.failures)
        position = {t.id: i for i, t in enumerate(tasks)}
        for task, prediction in zip(inline_tasks, batch.predictions, strict=True):
            if prediction is None:
                continue
            if prediction.model_version != job.model_version:
                answer.failures.append(_mismatch(task.id, prediction, job.model_version))
                continue
            answer.results[position[task.id]] = prediction.model_dump(mode="json", exclude_none=True)
            answer.inline += 1

    def _count(self, answer: PredictAnswer) -> None:
        self.metrics.predictions.inc(answer.inline)
        self.metrics.background.inc(answer.background)
        self.metrics.skipped.inc(answer.in_flight)
        for reason, n in Counter(f.reason for f in answer.failures).items():
            self.metrics.failed.labels(reason).inc(n)
        for failure in answer.failures[:20]:  # the first few in full; the count says the rest
            logger.warning("task %d got no prediction (%s): %s", failure.task_id, failure.reason, failure.message)
        logger.info(
            "job %s: %d tasks: %d inline, %d background, %d already in flight, %d failed (%s)",
            answer.job_id,
            len(answer.results),
            answer.inline,
            answer.background,
            answer.in_flight,
            len(answer.failures),
            answer.model_version,
        )


def _mismatch(task_id: int, prediction: Prediction, expected: str) -> TaskFailure:
    # The request pinned the checkpoint version; a worker that ignored the pin would make LS
    # re-predict forever (its version never equals /setup's), so the prediction is not sent.
    return TaskFailure(
        task_id,
        "version_mismatch",
        f"the worker scored with {prediction.model_version}, not the pinned {expected}; restart the workers",
    )
