"""Task names and message schemas between the backend/CLI and the workers.

Stdlib and pydantic only: the backend imports this module and must stay free of torch. Messages
carry ids, URLs/paths and label lists, never image bytes or tensors. Callers send
``Model.model_dump(mode="json")`` as the task's keyword arguments and validate the returned dict
with ``Result.model_validate``.

Example:
    >>> req = PredictRequest(project=3, labels=["cat", "dog"],
    ...                      images=[ImageRef(key="12", url="/data/upload/3/a.jpg", task_id=12)])
    >>> sorted(req.model_dump(mode="json"))[:3]
    ['images', 'labels', 'model_version']
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CHECK_ROUNDS",
    "COUNT_EFFORT",
    "EMBED",
    "PREDICT",
    "PROBE_IMAGE",
    "QUEUE_PREDICT",
    "QUEUE_TRAIN",
    "SCHEDULED_ROUNDS",
    "SCORE_POOL",
    "TRAIN_ROUND",
    "EmbedRequest",
    "EmbedResult",
    "ImageFailure",
    "ImageRef",
    "ImageScores",
    "ImageStatus",
    "PoolScore",
    "PredictRequest",
    "PredictResult",
    "ProbeRequest",
    "ProbeResult",
    "RoundRequest",
    "RoundResult",
    "ScorePoolRequest",
    "ScorePoolResult",
    "vocabulary_fingerprint",
]

# --- task names and queues ----------------------------------------------------------------------
PREDICT = "assistant.predict"
EMBED = "assistant.embed"
SCORE_POOL = "assistant.score_pool"
TRAIN_ROUND = "assistant.train_round"
# Light periodic tasks sent by Celery beat: queue rounds on the correction threshold / the schedule.
CHECK_ROUNDS = "assistant.check_rounds"
SCHEDULED_ROUNDS = "assistant.scheduled_rounds"
# `assistant doctor`: read one image as a worker would, without the model (milliseconds).
PROBE_IMAGE = "assistant.probe_image"
# The light task (backends.effort, run by workers that include it) counting annotators' edits.
COUNT_EFFORT = "backends.count_effort"

# A GPU box consumes both queues; a CPU box can consume `predict` only.
QUEUE_PREDICT = "predict"
QUEUE_TRAIN = "train"

# The most labels one request may carry (the reliability issue asks for 10,000-label vocabularies).
MAX_LABELS = 20_000
# The most images one message may carry: bigger batches are split by the caller.
MAX_IMAGES = 1_024


def vocabulary_fingerprint(labels: list[str]) -> str:
    """A stable 8-hex-digit fingerprint of an ordered label list.

    It is appended to the checkpoint version in the ``model_version`` Label Studio sees, so that
    adding a novel tag to the labeling config changes the version and Label Studio re-predicts.
    """
    digest = hashlib.sha256("\x1f".join(labels).encode("utf-8")).hexdigest()
    return digest[:8]


class _Message(BaseModel):
    # Unknown fields are ignored so that a newer caller does not break an older worker.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ImageRef(_Message):
    """One image to process.

    Attributes:
        key: The caller's id for the image (a Label Studio task id as a string, or a file name);
            results carry it back.
        url: ``/data/upload/...``, ``/data/local-files/?d=...``, ``http(s)://...``,
            ``s3://``/``gs://``/``azure-blob://`` (resolved through Label Studio's presign
            endpoint, which needs ``task_id``), or a local file path.
        task_id: The Label Studio task id, when the image belongs to a task.
    """

    key: str = Field(min_length=1, max_length=512)
    url: str = Field(min_length=1, max_length=8192)
    task_id: int | None = None


def _check_labels(labels: list[str]) -> list[str]:
    cleaned = [label.strip() for label in labels]
    if any(not label for label in cleaned):
        raise ValueError("labels must be non-empty strings")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("labels must be unique")
    return cleaned


class PredictRequest(_Message):
    """Tag a batch of images with a vocabulary.

    Attributes:
        project: Label Studio project id; selects the project's current model version.
        model_version: A registry version to use instead of the project's current one.
        labels: The vocabulary, in order: seen and novel tags alike.
        images: The images, at most :data:`MAX_IMAGES`.
        request_id: Carried into logs for tracing.
    """

    project: int | None = None
    model_version: str | None = None
    labels: list[str] = Field(min_length=1, max_length=MAX_LABELS)
    images: list[ImageRef] = Field(min_length=1, max_length=MAX_IMAGES)
    request_id: str | None = None

    _labels = field_validator("labels")(_check_labels)


class ImageFailure(_Message):
    """Why one image could not be processed (the rest of the batch is unaffected).

    Attributes:
        reason: Machine-readable: ``not_found``, ``unauthorized``, ``forbidden``, ``timeout``,
            ``corrupt``, ``unsupported_format``, ``too_large``, ``forbidden_host``, ``bad_url``,
            ``error``.
        message: What failed and the fix, for people.
    """

    reason: str
    message: str


class ImageScores(_Message):
    """Scores of one image over the request's vocabulary.

    Attributes:
        key: The :attr:`ImageRef.key` it answers.
        scores: Calibrated scores in [0, 1], one per label in the request's order; None on failure.
        error: Set when the image failed.
    """

    key: str
    task_id: int | None = None
    scores: list[float] | None = None
    error: ImageFailure | None = None


class PredictResult(_Message):
    """The answer to a :class:`PredictRequest`.

    Attributes:
        model_version: The registry version that produced the scores (without the vocabulary
            fingerprint; the backend appends it).
        labels: The vocabulary, echoed.
        seen: Per label: True when the model was trained on it, False for a novel (zero-shot) tag.
        thresholds: Per label: the calibrator's F1-optimal threshold on :attr:`ImageScores.scores`
            (the evaluation reports use it; pre-annotation decides by edit costs instead).
        items: One per image, in request order.
        calibration: The kind of calibration the scores come from: ``platt`` (fitted on
            annotations), ``prior`` (a backbone prior fitted on its own scores) or ``default``
            (never measured: the backend then serves few, confident tags); empty from an older
            worker.
    """

    model_version: str
    labels: list[str]
    seen: list[bool]
    thresholds: list[float]
    items: list[ImageScores]
    calibration: str = ""


class EmbedRequest(_Message):
    """Compute (or find in the feature cache) the image features of a batch."""

    project: int | None = None
    model_version: str | None = None
    images: list[ImageRef] = Field(min_length=1, max_length=MAX_IMAGES)
    request_id: str | None = None


class ImageStatus(_Message):
    """Outcome of embedding one image."""

    key: str
    content_hash: str | None = None
    cached: bool = False
    error: ImageFailure | None = None


class EmbedResult(_Message):
    """The answer to an :class:`EmbedRequest`."""

    model_version: str
    backbone_version: str
    items: list[ImageStatus]


class ScorePoolRequest(_Message):
    """Score an unlabeled pool for active learning (features from the cache where present).

    Attributes:
        strategy: A registered selection strategy (``random``, ``uncertainty``, ``entropy``,
            ``novelty``, ``diversity``, ``hybrid``, ``saving``).
        k: How many images to choose.
        novel_labels: Labels with no annotations yet (the ``novelty`` strategy favours them);
            empty: the labels the model in service has not been trained on.
        seed: Seed of any randomness in the strategy.
        labeled: Images already labeled: the diversity strategies choose away from them (their
            features come from the cache like the pool's).
        break_even: The project's edit-cost break-even point: with it, each image's expected
            saving from pre-annotation is measured (the ``saving`` strategy weighs by it).
    """

    project: int | None = None
    model_version: str | None = None
    labels: list[str] = Field(min_length=1, max_length=MAX_LABELS)
    images: list[ImageRef] = Field(min_length=1)
    strategy: str = "hybrid"
    k: int = Field(default=100, ge=1)
    novel_labels: list[str] = Field(default_factory=list)
    seed: int = 0
    request_id: str | None = None
    labeled: list[ImageRef] = Field(default_factory=list)
    break_even: float | None = Field(default=None, gt=0, lt=1)

    _labels = field_validator("labels")(_check_labels)


class PoolScore(_Message):
    """One chosen image: its rank, its acquisition score and why it was chosen.

    Attributes:
        rank: 1 for the image to label first.
        score: The strategy's acquisition score (its own scale; higher is more wanted).
        reason: Why, for people (e.g. the borderline tag and its threshold).
    """

    key: str
    task_id: int | None = None
    rank: int
    score: float
    reason: str


class ScorePoolResult(_Message):
    """The answer to a :class:`ScorePoolRequest`.

    Attributes:
        model_version: The registry version that scored the pool.
        strategy: The strategy that chose.
        chosen: The chosen images, best first.
        failed: Pool images that could not be scored (never chosen).
        pool_size: Images in the request's pool.
        cached: Pool images whose features came from the feature cache.
        novel_labels: The novel labels the scores were summarised for.
    """

    model_version: str
    strategy: str
    chosen: list[PoolScore]
    failed: list[ImageScores] = Field(default_factory=list)
    pool_size: int = 0
    cached: int = 0
    novel_labels: list[str] = Field(default_factory=list)


class RoundRequest(_Message):
    """Run one fine-tuning round for a project.

    Attributes:
        trigger: What asked for the round (for the round report and the decision log).
        stages: Which training stages to run (``stage1`` image side, ``stage2`` prompt tuning);
            empty: the worker's ``ASSISTANT_ROUND_STAGES`` (both by default).
        promote: Promote the candidate when it wins; False only evaluates it.
    """

    project: int
    trigger: Literal["manual", "threshold", "schedule", "start_training", "agent"] = "manual"
    stages: list[Literal["stage1", "stage2"]] = Field(default_factory=list)
    promote: bool = True
    request_id: str | None = None


class RoundResult(_Message):
    """The answer to a :class:`RoundRequest`.

    Attributes:
        project: The project.
        round_id: The round (``r0007``); empty when the round did not start (``busy``).
        candidate_version: The registered candidate, when one was trained.
        current_version: The version serving the project after the round.
        promoted: Whether the candidate became current.
        reason: The decision or why nothing was trained, for people.
        metrics: The candidate's held-out metrics (``mAP``, ``mAP_seen``, ``mAP_novel``,
            ``F1@3`` ... in percent) and ``current_mAP``/``delta_mAP``.
        report_path: The round report (``report.md``), when one was written.
        status: ``promoted``, ``kept`` (trained, not promoted), ``skipped`` (too few
            annotations) or ``busy`` (another round holds the project's lock).
        counts: Sizes: images per split, new corrections since the last round, fetch failures.
    """

    project: int
    round_id: str
    candidate_version: str | None
    current_version: str
    promoted: bool
    reason: str
    metrics: dict[str, float] = Field(default_factory=dict)
    report_path: str | None = None
    status: Literal["promoted", "kept", "skipped", "busy", ""] = ""
    counts: dict[str, int] = Field(default_factory=dict)


class ProbeRequest(_Message):
    """Read one image as a prediction would, without the model (``assistant doctor``).

    Attributes:
        image: The image, as a prediction request would carry it.
        request_id: Carried into logs for tracing.
    """

    image: ImageRef
    request_id: str | None = None


class ProbeResult(_Message):
    """The answer to a :class:`ProbeRequest`.

    Attributes:
        key: The image's key.
        worker: The worker's node name.
        source: Where the worker read it: a file path (from disk) or a URL (downloaded); empty
            when it could not tell.
        local: True when it was read from disk.
        size_bytes: Bytes read.
        width: Decoded width in pixels (0 on failure).
        height: Decoded height in pixels (0 on failure).
        error: Why it could not be read or decoded; None when it was.
    """

    key: str
    worker: str = ""
    source: str = ""
    local: bool = False
    size_bytes: int = 0
    width: int = 0
    height: int = 0
    error: ImageFailure | None = None
