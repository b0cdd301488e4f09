"""Pure conversions between Label Studio payloads and worker messages (no network, no model).

- Task → ``state.contracts.ImageRef``: :func:`task_image_refs`, :func:`build_predict_requests`.
- Worker ``PredictResult`` → one Label Studio prediction per task: :func:`predictions_from_results`.

Annotations → corrections (Label Studio results → label sets) are :mod:`studio.results`.

**Selection** (the decision rule, ``docs/preannotation.md``; the policy is
:class:`backends.serving.ServingPolicy`). Per control, a target (choice or taxonomy node) scores
the max of the workers' calibrated probabilities over its model labels; the project's refit maps
that probability (none before the first refit); the target is shown when the result reaches its
cut: the ``<Choice model_threshold>``, else the control's ``model_threshold``, else the
**break-even point** ``c_remove / (c_add + c_remove)`` of the control's edit costs
(:func:`preannotation.show_mask`). Tags the guard tripped are never shown. The shown targets are
ordered by probability and capped at the control's max tags (1 for single-choice). A model whose
calibration was never measured shows at most a few tags from a high probability on until the
project's first refit. A control with nothing shown still gets a result item, with an empty
selection and the per-tag scores: "why no tags?" can then be read from the prediction itself
(:data:`EMPTY_NOTE`). The workers' F1-optimal thresholds are no longer used here: they serve the
evaluation reports.

**Task score = confidence.** For each target with probability ``s`` and cut ``t``, the signed
distance to the threshold, normalised to [-1, 1] on each side, is
``d = (s - t) / (1 - t)`` when ``s >= t`` and ``d = (s - t) / t`` otherwise; its uncertainty is
``u = 1 - |d|`` (1 at the threshold, 0 at a score of 0 or 1). The task's uncertainty ``U`` is the
mean of the :data:`UNCERTAIN_TOP_K` largest ``u`` over every target of every active control, and
``score = 1 - U``. Sorting the Data Manager's "Prediction score" ascending therefore puts the tasks
with the most borderline tags first. Averaging the top few rather than taking the single
largest keeps a 1,000-label vocabulary, where some label is always near its threshold, from
making every task look equally uncertain. An item's ``score`` is the same measure over its
control alone.

**Per-tag scores** go into each result item under :data:`SCORES_KEY`:
``{"scores": {key: p}, "thresholds": {key: cut}, "novel": [key, ...], "calibration": kind}`` for
at most :data:`MAX_SCORES_KEPT` targets (the selected ones, then the most probable), where
``scores`` are the probabilities served (after the project's refit), ``novel`` marks targets whose
model labels the model never trained on and ``calibration`` is the kind of the model's own
calibration (``platt``, ``prior``, ``default``). A prediction served through a refit also carries
``"recalibration": "r<seq>"`` and ``"model_scores": {key: p}``, the model's own probabilities, so
that the next refit is fitted on the model's probabilities, never on a refit's output. Tags the
guard tripped are listed under ``"suppressed"``. Label Studio keeps extra keys of result items
verbatim on the ``/predict`` path and in export snapshots, but drops prediction-level extras on
that path (pinned by ``tests/integration/test_ls_harness.py``). The key is not ``meta``: the
editor uses a region's ``meta`` for annotator notes and copies it into annotations.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from backends.errors import TaskDataError, WorkerResultError
from backends.serving import ServingPolicy
from preannotation import show_mask
from preannotation.logistic import logit, sigmoid
from state.contracts import MAX_IMAGES, ImageRef, ImageScores, PredictRequest, PredictResult
from studio.controls import ProjectVocabulary, TagControl
from studio.protocol import LSPredictResponse, Prediction, ResultItem, Task

__all__ = [
    "DEFAULT_MAX_TAGS",
    "EMPTY_NOTE",
    "MAX_SCORES_KEPT",
    "SCORES_KEY",
    "UNCERTAIN_TOP_K",
    "PredictionBatch",
    "TaskFailure",
    "build_predict_requests",
    "confidence",
    "image_key",
    "predictions_from_results",
    "recalibration_of",
    "task_image_refs",
]

logger = logging.getLogger(__name__)

SCORES_KEY: Final = "assistant"
# Says, inside an empty prediction's item, why it selects nothing.
EMPTY_NOTE: Final = (
    "no tag reached its cut (the break-even point unless model_threshold is set): compare scores with thresholds"
)
# Per-tag scores kept per result item: a 10,000-label vocabulary would otherwise add ~250 kB to
# every prediction. 50 covers every selected tag and the borderline ones that matter for review.
MAX_SCORES_KEPT: Final = 50
# Tags a prediction selects when its control sets no ``model_max_tags``: with a 10,000-choice
# vocabulary, thousands may pass uncalibrated thresholds, and thousands of chips help no annotator.
DEFAULT_MAX_TAGS: Final = 50
UNCERTAIN_TOP_K: Final = 3
SCORE_DECIMALS: Final = 4

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TaskFailure:
    """A task that gets no prediction, and why (reported back, never dropped silently).

    Attributes:
        task_id: The Label Studio task id.
        reason: Machine-readable (``missing_data``, ``bad_data``, ``no_result``, or a worker
            ``ImageFailure.reason`` such as ``not_found`` or ``corrupt``).
        message: What failed and the fix, for people.
    """

    task_id: int
    reason: str
    message: str


# --- tasks → image references -------------------------------------------------------------------
def image_key(task_id: int, value_key: str, vocab: ProjectVocabulary) -> str:
    """The ``ImageRef.key`` of one image: the task id, or ``"<task id>:<data key>"`` when the
    config tags several images per task."""
    return str(task_id) if len(vocab.value_keys) == 1 else f"{task_id}:{value_key}"


def task_image_refs(vocab: ProjectVocabulary, task: Task) -> list[ImageRef]:
    """The images of one task, one per data key the active controls read.

    Raises:
        TaskDataError: A key is missing from ``task.data``, or its value is not a non-empty
            string of at most 8,192 characters (inline ``data:`` URIs are refused).
    """
    refs = []
    for value_key in vocab.value_keys:
        if value_key not in task.data:
            raise TaskDataError(
                f"task {task.id} has no {value_key!r} in its data",
                task_id=task.id,
                reason="missing_data",
                why=f"the labeling config reads the image from ${value_key}; the task has keys {sorted(task.data)}",
                fix=f'import tasks as {{"data": {{"{value_key}": "<image URL>"}}}} or change the <Image value>',
            )
        url = task.data[value_key]
        if not isinstance(url, str) or not url.strip():
            raise TaskDataError(
                f"task {task.id} has {value_key}={_preview(url)}, not an image URL",
                task_id=task.id,
                fix="store one image URL or path string per task",
            )
        try:
            refs.append(ImageRef(key=image_key(task.id, value_key, vocab), url=url.strip(), task_id=task.id))
        except ValidationError as exc:
            raise TaskDataError(
                f"task {task.id} has an unusable {value_key} ({len(url)} characters)",
                task_id=task.id,
                why="image references are URLs of at most 8,192 characters; inline data: URIs are not supported",
                fix="upload the image to Label Studio or serve it by URL",
            ) from exc
    return refs


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def build_predict_requests(
    vocab: ProjectVocabulary,
    tasks: Sequence[Task],
    *,
    project: int | None = None,
    model_version: str | None = None,
    request_id: str | None = None,
    chunk_size: int = MAX_IMAGES,
) -> tuple[list[PredictRequest], list[TaskFailure]]:
    """Worker requests for a batch of tasks, in chunks of at most ``chunk_size`` images.

    A task whose data is unusable becomes a :class:`TaskFailure` and sends no image at all.

    Returns:
        The requests (none when every task failed) and the failed tasks.
    """
    images: list[ImageRef] = []
    failures: list[TaskFailure] = []
    for task in tasks:
        try:
            images.extend(task_image_refs(vocab, task))
        except TaskDataError as exc:
            failures.append(TaskFailure(task.id, exc.reason, exc.message))
    requests = [
        PredictRequest(
            project=project,
            model_version=model_version,
            labels=list(vocab.labels),
            images=images[start : start + chunk_size],
            request_id=request_id,
        )
        for start in range(0, len(images), max(1, chunk_size))
    ]
    return requests, failures


# --- worker results → predictions ---------------------------------------------------------------
def _uncertainties(scores: Floats, thresholds: Floats) -> Floats:
    s = np.clip(scores, 0.0, 1.0)
    span = np.where(s >= thresholds, 1.0 - thresholds, thresholds)
    result: Floats = 1.0 - np.abs(s - thresholds) / np.maximum(span, 1e-6)
    return result


def _top(values: Floats, k: int) -> Floats:
    """The ``k`` largest values (unordered); all of them when there are fewer."""
    if values.size <= k:
        return values
    result: Floats = np.partition(values, values.size - k)[-k:]
    return result


def _confidence_of(uncertainties: Floats, top_k: int = UNCERTAIN_TOP_K) -> float:
    if uncertainties.size == 0:
        return 1.0
    return float(np.clip(1.0 - _top(uncertainties, max(1, top_k)).mean(), 0.0, 1.0))


def confidence(scores: Sequence[float], thresholds: Sequence[float], top_k: int = UNCERTAIN_TOP_K) -> float:
    """``1 -`` the mean of the ``top_k`` largest per-label uncertainties (module docstring).

    Returns:
        A confidence in [0, 1]; 1.0 when there is nothing to be uncertain about.
    """
    if len(scores) != len(thresholds):
        raise ValueError(f"{len(scores)} scores but {len(thresholds)} thresholds")
    return _confidence_of(_uncertainties(np.asarray(scores, float), np.asarray(thresholds, float)), top_k)


@dataclass(frozen=True)
class _Plan:
    """A control's targets as vocabulary positions and cuts, worked out once per batch, not per task.

    Scoring runs on numpy arrays: a 10,000-label control scores 10,000 targets per task. With a
    Python object per target, 64 such tasks took 11 s on our 2 cores; vectorised, 0.8 s.
    """

    control: TagControl
    first: Ints  # per target: its first model label's position
    multi: tuple[tuple[int, tuple[int, ...]], ...]  # (target, positions) for predicted_values lists
    fixed: Bools  # per target: an explicit model_threshold sets its cut
    cuts: Floats  # per target: its model_threshold, else the control's break-even point
    suppressed: Bools  # per target: tripped by the guard
    slopes: Floats | None  # per target: the project refit's map on logits (None: no refit)
    intercepts: Floats | None

    @classmethod
    def of(cls, control: TagControl, index: Mapping[str, int], policy: ServingPolicy) -> _Plan:
        positions = [tuple(index[label] for label in t.model_labels) for t in control.targets]
        fixed = [t.threshold if t.threshold is not None else control.knobs.threshold for t in control.targets]
        break_even = control.knobs.edit_costs(policy.costs).break_even
        keys = [t.key for t in control.targets]
        slopes = intercepts = None
        recal = policy.recalibration
        if recal is not None and not recal.is_identity:
            maps = [recal.map_of(key) for key in keys]
            slopes = np.array([m.slope for m in maps], dtype=float)
            intercepts = np.array([m.intercept for m in maps], dtype=float)
        return cls(
            control=control,
            first=np.array([p[0] for p in positions], dtype=np.int64),
            multi=tuple((i, p) for i, p in enumerate(positions) if len(p) > 1),
            fixed=np.array([f is not None for f in fixed], dtype=bool),
            cuts=np.array([break_even if f is None else f for f in fixed], dtype=float),
            suppressed=np.array([key in policy.suppressed for key in keys], dtype=bool),
            slopes=slopes,
            intercepts=intercepts,
        )


@dataclass(frozen=True)
class _ControlScores:
    """Per target of one control on one image: probabilities, cuts, novelty, uncertainty, what is shown."""

    scores: Floats  # served: after the project's refit
    model_scores: Floats | None  # the model's own, when a refit changed them
    thresholds: Floats
    novel: Bools
    uncertainties: Floats
    shown: Bools


def _score_control(plan: _Plan, scores: Floats, seen: Bools, floor: float | None) -> _ControlScores:
    """Probabilities, cuts and the shown mask; ``floor`` raises every cut but an explicit threshold."""
    best = plan.first.copy()
    novel = ~seen[best]
    for target, positions in plan.multi:  # a choice scores the max of its model labels
        best[target] = max(positions, key=lambda i: scores[i])
        novel[target] = not seen[list(positions)].any()
    model = np.clip(scores[best], 0.0, 1.0)
    served = model
    if plan.slopes is not None and plan.intercepts is not None:
        served = sigmoid(plan.slopes * logit(model) + plan.intercepts)
    cuts = plan.cuts
    if floor is not None:  # an explicit model_threshold still wins
        cuts = np.where(plan.fixed, cuts, np.maximum(cuts, floor))
    shown = show_mask(served, threshold=cuts, suppressed=plan.suppressed)
    return _ControlScores(
        scores=served,
        model_scores=None if served is model else model,
        thresholds=cuts,
        novel=novel,
        uncertainties=_uncertainties(served, cuts),
        shown=shown,
    )


def _check_result(vocab: ProjectVocabulary, result: PredictResult) -> None:
    if list(result.labels) != list(vocab.labels):
        raise WorkerResultError(
            "a worker scored a different vocabulary than the labeling config's",
            why=f"expected {len(vocab.labels)} labels (fingerprint {vocab.fingerprint}), got {len(result.labels)}",
            fix="retry; if it persists, restart the workers so they run the same contract version",
        )
    if not len(result.seen) == len(result.thresholds) == len(result.labels):
        raise WorkerResultError("a worker answered with seen/thresholds lists that do not match its labels")


def _checked_scores(result: PredictResult, item: ImageScores) -> Floats:
    scores = np.asarray(item.scores or [], dtype=float)
    if scores.size != len(result.labels) or not np.isfinite(scores).all():
        raise WorkerResultError(
            f"a worker answered image {item.key} with {scores.size} scores for {len(result.labels)} labels"
        )
    return scores


def _item_id(task_id: int, control: str) -> str:
    # Deterministic, so re-publishing the same prediction (background retries) is idempotent.
    return hashlib.sha1(f"{task_id}/{control}".encode(), usedforsecurity=False).hexdigest()[:10]


def _control_item(
    task_id: int, plan: _Plan, scored: _ControlScores, extra: Mapping[str, Any], max_tags: int | None
) -> ResultItem:
    control = plan.control
    s, t, targets = scored.scores, scored.thresholds, control.targets
    passing = [int(i) for i in np.flatnonzero(scored.shown)]
    passing.sort(key=lambda i: -s[i])
    unpruned = set(control.prune([targets[i] for i in passing]))
    selected = [i for i in passing if targets[i] in unpruned][: max_tags or DEFAULT_MAX_TAGS]
    # The selected targets first, then the most probable, up to the cap.
    top = [int(i) for i in np.argsort(-s, kind="stable")[:MAX_SCORES_KEPT]]
    kept = list(dict.fromkeys([*selected, *top]))[:MAX_SCORES_KEPT]
    extras: dict[str, Any] = {
        "scores": {targets[i].key: round(float(s[i]), SCORE_DECIMALS) for i in kept},
        "thresholds": {targets[i].key: round(float(t[i]), SCORE_DECIMALS) for i in kept},
        "novel": [targets[i].key for i in kept if scored.novel[i]],
        **extra,
    }
    if not selected:
        extras["note"] = EMPTY_NOTE
    if scored.model_scores is not None:
        extras["model_scores"] = {targets[i].key: round(float(scored.model_scores[i]), SCORE_DECIMALS) for i in kept}
    if plan.suppressed.any():
        extras["suppressed"] = [targets[i].key for i in np.flatnonzero(plan.suppressed)]
    return ResultItem(
        id=_item_id(task_id, control.name),
        from_name=control.name,
        to_name=control.to_name,
        type=control.result_type,
        value=control.result_value([targets[i] for i in selected]),
        score=round(_confidence_of(scored.uncertainties), SCORE_DECIMALS),
        assistant=extras,
    )


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions for a batch of tasks, in task order, and the tasks that got none.

    Attributes:
        predictions: One per task; None for a failed task.
        failures: Why each failed task got no prediction.
    """

    predictions: tuple[Prediction | None, ...]
    failures: tuple[TaskFailure, ...]

    def ls_results(self) -> list[dict[str, Any] | list[Any]]:
        """``results`` for the ``/predict`` answer: a prediction dict per task, ``[]`` for a failed one.

        The empty list keeps ``len(results) == len(tasks)`` (Label Studio iterates a per-task list
        and saves nothing for it), so a failed image neither fails the batch nor triggers LS's
        one-by-one fallback.
        """
        return [[] if p is None else p.model_dump(mode="json", exclude_none=True) for p in self.predictions]

    def response(self) -> LSPredictResponse:
        """The ``/predict`` answer as a model."""
        return LSPredictResponse(results=[[] if p is None else p for p in self.predictions])


def recalibration_of(result: Iterable[ResultItem | Mapping[str, Any]]) -> str | None:
    """The project refit a prediction was served through (``"r<seq>"``), None: the model's own calibration.

    Read from the prediction's result items (as stored in Label Studio, or as built here): the
    first item that names one. A refit's predictions all name it, so a prediction whose mark is
    not the project's latest refit of its checkpoint shows what an older calibration expected.
    """
    for item in result:
        extras = item.assistant if isinstance(item, ResultItem) else item.get(SCORES_KEY)
        if isinstance(extras, Mapping) and extras.get("recalibration"):
            return str(extras["recalibration"])
    return None


def predictions_from_results(
    vocab: ProjectVocabulary,
    tasks: Sequence[Task],
    results: Iterable[PredictResult],
    failures: Iterable[TaskFailure] = (),
    policy: ServingPolicy | None = None,
) -> PredictionBatch:
    """Turn worker results (one per request chunk) into one Label Studio prediction per task.

    Args:
        vocab: The vocabulary the requests were built from.
        tasks: The tasks, in the order Label Studio sent them.
        results: The workers' answers to :func:`build_predict_requests`' requests.
        failures: The failures :func:`build_predict_requests` returned (passed through).
        policy: The project's costs, refit, guard and caution (:mod:`backends.serving`); the
            default costs alone when None.

    Returns:
        The predictions, in task order, and every task that got none, with the reason.

    Raises:
        WorkerResultError: A result does not match the vocabulary (labels, score counts).
    """
    policy = policy or ServingPolicy()
    by_key: dict[str, tuple[PredictResult, ImageScores]] = {}
    seen: dict[int, Bools] = {}
    for result in results:
        _check_result(vocab, result)
        by_key.update({item.key: (result, item) for item in result.items})
        seen[id(result)] = np.asarray(result.seen, dtype=bool)
    failed = {f.task_id: f for f in failures}
    index = {label: i for i, label in enumerate(vocab.labels)}
    plans = [_Plan.of(control, index, policy) for control in vocab.active]
    predictions: list[Prediction | None] = []
    for task in tasks:
        if task.id in failed:
            predictions.append(None)
            continue
        prediction = _task_prediction(vocab, plans, task, by_key, seen, policy)
        if isinstance(prediction, TaskFailure):
            failed[task.id] = prediction
            predictions.append(None)
        else:
            predictions.append(prediction)
    if failed:
        logger.warning("%d of %d tasks got no prediction", len(failed), len(tasks))
    return PredictionBatch(tuple(predictions), tuple(failed.values()))


def _task_prediction(
    vocab: ProjectVocabulary,
    plans: Sequence[_Plan],
    task: Task,
    by_key: Mapping[str, tuple[PredictResult, ImageScores]],
    seen: Mapping[int, Bools],
    policy: ServingPolicy,
) -> Prediction | TaskFailure:
    items: list[ResultItem] = []
    # The task's top-k uncertainties are among the union of each control's top-k.
    worst: list[Floats] = []
    versions: set[str] = set()
    for plan in plans:
        control = plan.control
        key = image_key(task.id, control.value_key, vocab)
        if key not in by_key:
            return TaskFailure(task.id, "no_result", f"no worker result for image {key} of task {task.id}; retry")
        result, answer = by_key[key]
        if answer.error is not None:
            return TaskFailure(task.id, answer.error.reason, answer.error.message)
        versions.add(result.model_version)
        conservative = policy.conservative(result.calibration)
        floor = policy.conservative_threshold if conservative else None
        scored = _score_control(plan, _checked_scores(result, answer), seen[id(result)], floor)
        worst.append(_top(scored.uncertainties, UNCERTAIN_TOP_K))
        extra: dict[str, Any] = {"calibration": result.calibration} if result.calibration else {}
        if scored.model_scores is not None:
            extra["recalibration"] = policy.recalibration_id
        cap = control.max_tags
        if conservative:
            cap = min(cap or DEFAULT_MAX_TAGS, policy.conservative_max_tags)
        items.append(_control_item(task.id, plan, scored, extra, cap))
    if len(versions) > 1:
        # Only a task with several images split over chunks, with a promotion landing between
        # them, gets here; no single version string is honest, so LS retries it next batch.
        return TaskFailure(
            task.id, "version_changed", f"task {task.id}'s images were scored by {sorted(versions)}; retry"
        )
    return Prediction(
        model_version=vocab.model_version(versions.pop()),
        score=round(_confidence_of(np.concatenate(worst) if worst else np.empty(0)), SCORE_DECIMALS),
        result=items,
    )
