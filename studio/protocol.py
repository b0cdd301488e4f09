"""Pydantic models of the Label Studio ML-backend wire format (``docs/backend.md``, "Endpoints").

Every request model ignores unknown fields: Label Studio adds keys over time (``params.hostname``
in 2026, a top-level ``model_version`` in older releases), and a strict model would answer 422 to
a newer Label Studio. Project references arrive in three shapes and are all parsed to an int id:
``"3.1746612998"`` (``<id>.<created_at>`` in ``/setup`` and ``/predict``), ``3`` (tasks,
annotations) and ``{"id": 3, ...}`` (webhooks). Every id (project, task, annotation, prediction,
user) is an :data:`Id`: a whole number from 0 to :data:`MAX_ID`, so that a negative or
out-of-range id is a 422 at the edge instead of an overflow in the ledger or the registry.

Example:
    >>> SetupRequest.model_validate({"project": "3.1746612998", "schema": "<View/>", "new": 1}).project
    3
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "ANNOTATION_ACTIONS",
    "MAX_ID",
    "DELETE_ACTIONS",
    "TRAIN_ACTIONS",
    "Annotation",
    "AnnotationRef",
    "Id",
    "PredictParams",
    "LSPredictRequest",
    "LSPredictResponse",
    "Prediction",
    "ResultItem",
    "SetupRequest",
    "SetupResponse",
    "Task",
    "WebhookEvent",
    "WebhookProject",
    "parse_project_id",
]

# Webhook actions we act on. Label Studio sends the plural ANNOTATIONS_DELETED; the singular
# spelling is what the label-studio-ml library listens for, so accept both.
ANNOTATION_ACTIONS: Final = frozenset({"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"})
DELETE_ACTIONS: Final = frozenset({"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"})
TRAIN_ACTIONS: Final = frozenset({"START_TRAINING"})

#: The largest id accepted: Label Studio's ids are 64-bit database integers (from 1 up), and the
#: ledger stores them in 64-bit INTEGER columns (a larger one overflowed there: a 500).
MAX_ID: Final = 2**63 - 1
#: A Label Studio object id on the wire.
Id = Annotated[int, Field(ge=0, le=MAX_ID)]


def _checked_id(value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"not a project reference: {value} (project ids are whole numbers from 0 to 2^63-1)")
    return value


def parse_project_id(value: object) -> int | None:
    """The project id from any of Label Studio's project references.

    Args:
        value: ``"3.1746612998"``, ``"3"``, ``3``, ``{"id": 3, ...}`` or None.

    Returns:
        The id, or None when ``value`` is None or ``""``.

    Raises:
        ValueError: ``value`` names no project (pydantic turns it into a validation error).
    """
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if isinstance(value, dict):  # one level only: {"id": {"id": ...}} names no project (and may nest deep)
            raise ValueError("not a project reference: a project object whose id is an object")
        return parse_project_id(value)
    if isinstance(value, bool):  # bool is an int subclass; True is no project id
        raise ValueError(f"not a project reference: {value!r}")
    if isinstance(value, int):
        return _checked_id(value)
    if isinstance(value, str):
        head = value.strip().split(".", 1)[0]
        if head.isascii() and head.isdigit() and len(head) <= 19:  # "²".isdigit() is True, int("²") fails
            return _checked_id(int(head))
    # reprlib: bounded, whatever the input's size or nesting (a plain repr of deep JSON recurses).
    raise ValueError(f"not a project reference: {reprlib.repr(value)} (expected an id or '<id>.<timestamp>')")


class _Wire(BaseModel):
    # Unknown keys are dropped, never refused (see the module docstring).
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _ProjectRef(_Wire):
    @field_validator("project", mode="before", check_fields=False)
    @classmethod
    def _project_id(cls, value: object) -> int | None:
        return parse_project_id(value)


# --- /setup -------------------------------------------------------------------------------------
class SetupRequest(_ProjectRef):
    """Body of ``POST /setup``, sent before every prediction batch and on connect.

    Attributes:
        project: Project id, parsed from ``"<id>.<created_at>"``.
        label_config: The labeling config XML (the wire name is ``schema``).
        hostname: Label Studio's URL as it sees itself; we use our configured URL instead.
        access_token: The project creator's legacy token; never logged.
        extra_params: The ML backend's ``extra_params`` JSON; may be null.
        model_version: Sent by older Label Studio releases only.
    """

    project: int | None = None
    label_config: str = Field(default="", alias="schema")
    hostname: str | None = None
    access_token: SecretStr | None = None
    extra_params: dict[str, Any] | None = None
    model_version: str | None = None


class SetupResponse(_Wire):
    """Answer to ``/setup``: the version Label Studio stores and compares predictions with."""

    model_version: str


# --- /predict -----------------------------------------------------------------------------------
class Task(_ProjectRef):
    """A Label Studio task as ``/predict`` and webhooks carry it.

    Attributes:
        id: Task id.
        data: The task data; image URLs live under the ``$keys`` of the labeling config.
        meta: Free-form task meta.
        project: Project id.
        annotations: Expanded only for interactive calls.
        predictions: Expanded only for interactive calls.
    """

    id: Id
    data: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] | list[Any] | None = None
    project: int | None = None
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    predictions: list[dict[str, Any]] = Field(default_factory=list)


class PredictParams(_Wire):
    """``params`` of a ``/predict`` body.

    Attributes:
        login: The project's task-data login (for media behind basic auth).
        password: Its password; never logged.
        context: The annotator's input, for interactive calls only.
    """

    login: str | None = None
    password: SecretStr | None = None
    context: dict[str, Any] | None = None


class LSPredictRequest(_ProjectRef):
    """Body of ``POST /predict``: every selected task in one call.

    Attributes:
        tasks: The tasks to predict, in the order the answer must keep.
        project: Project id, parsed from ``"<id>.<created_at>"``.
        label_config: The labeling config XML.
        params: Credentials and interactive context.
        model_version: Sent by older Label Studio releases only.
    """

    tasks: list[Task] = Field(default_factory=list)
    project: int | None = None
    label_config: str | None = None
    params: PredictParams = Field(default_factory=PredictParams)
    model_version: str | None = None


class ResultItem(_Wire):
    """One region of a prediction or annotation result (for tags: one item per control).

    Attributes:
        id: Region id (ours are deterministic per task and control).
        from_name: The control's name.
        to_name: The object's name.
        type: The control tag in lower case (``choices``, ``taxonomy``).
        value: ``{"choices": [...]}`` or ``{"taxonomy": [[root, ..., node], ...]}``.
        score: Confidence of this item, in [0, 1].
        origin: Set by the editor on annotations: ``prediction``, ``prediction-changed`` or
            ``manual``.
        assistant: Our per-tag scores and seen/novel marks. Label Studio stores extra keys of a
            result item verbatim on both ``/api/predictions/`` and the ``/predict`` path, and
            returns them in exports (pinned by ``tests/integration/test_ls_harness.py``).
            Prediction-level extras, by contrast, are dropped on the ``/predict`` path.
    """

    id: str | None = None
    from_name: str
    to_name: str
    type: str
    value: dict[str, Any]
    score: float | None = None
    origin: str | None = None
    assistant: dict[str, Any] | None = None


class Prediction(_Wire):
    """One prediction for one task, as ``/predict`` returns it and ``/api/predictions/`` takes it.

    Attributes:
        model_version: Exactly the string ``/setup`` returns (``<checkpoint>+<fingerprint>``).
        score: Task confidence in [0, 1]; the Data Manager sorts on it (ascending = most
            uncertain first).
        result: One item per control with selected tags.
        task: The task id, for ``/api/predictions/`` (the background path); omitted on ``/predict``.
        id: Set by Label Studio on stored predictions (``annotation.parent_prediction`` names it).
    """

    model_version: str = ""
    score: float | None = None
    result: list[ResultItem] = Field(default_factory=list)
    task: Id | None = None
    id: Id | None = None

    @field_validator("model_version", mode="before")
    @classmethod
    def _no_null_version(cls, value: object) -> object:
        # Stored predictions may carry a null version; the wire format always has a string.
        return "" if value is None else value


class LSPredictResponse(_Wire):
    """Answer to ``/predict``: one entry per task, in task order.

    An entry is a prediction or a list of predictions (Label Studio ≥ 1.12 iterates a list). An
    **empty list** gives a task no prediction while keeping the count equal to the task count, so
    one failed image neither fails the batch nor triggers LS's one-by-one fallback, and LS retries
    the task on the next batch. ``{"results": []}`` is the "finishing in the background" answer.
    """

    results: list[Prediction | list[Prediction]] = Field(default_factory=list)


# --- webhooks -----------------------------------------------------------------------------------
class WebhookProject(_Wire):
    """The ``project`` object of a webhook (a full project serialization; we keep a few fields)."""

    id: Id
    title: str | None = None
    label_config: str | None = None
    model_version: str | None = None


class Annotation(_ProjectRef):
    """An annotation as webhooks and the annotations API carry it.

    Attributes:
        id: Annotation id.
        task: Task id.
        project: Project id.
        result: The annotator's result items.
        completed_by: User id (or a user object, with some serializers).
        was_cancelled: True for a skipped task.
        ground_truth: Marked as ground truth.
        lead_time: Seconds the annotator spent.
        parent_prediction: The prediction the annotator started from, when there was one.
        parent_annotation: The annotation it was copied from, when there was one.
        updated_at: ISO timestamp of the last change.
    """

    id: Id | None = None
    task: Id | None = None
    project: int | None = None
    result: list[ResultItem] = Field(default_factory=list)
    completed_by: Id | dict[str, Any] | None = None
    was_cancelled: bool = False
    ground_truth: bool = False
    lead_time: float | None = None
    parent_prediction: Id | None = None
    parent_annotation: Id | None = None
    updated_at: str | None = None


class AnnotationRef(_Wire):
    """An annotation by id only (the payload of ANNOTATIONS_DELETED)."""

    id: Id


class WebhookEvent(_Wire):
    """Body of ``POST /webhook``: an annotation event, START_TRAINING, or anything else.

    ``annotation`` is a dict for ANNOTATION_CREATED/UPDATED and a list for the bulk
    ANNOTATIONS_CREATED; ANNOTATIONS_DELETED carries ``annotations`` (ids only); START_TRAINING
    carries only ``project``. Read the project from :attr:`project_id`, never from
    ``annotation.project`` (absent on START_TRAINING).
    """

    action: str
    project: WebhookProject | None = None
    annotation: Annotation | list[Annotation] | None = None
    annotations: list[AnnotationRef] | None = None
    task: Task | list[Task] | None = None

    @field_validator("project", mode="before")
    @classmethod
    def _project_object(cls, value: object) -> object:
        # Some senders (tests, older LS) give a bare id; normalise it to the object form.
        if isinstance(value, int | str) and not isinstance(value, bool):
            return {"id": parse_project_id(value)}
        return value

    @property
    def kind(self) -> Literal["annotation", "delete", "train", "other"]:
        """What the backend does with the event: record, mark deleted, start a round, or ignore."""
        if self.action in ANNOTATION_ACTIONS:
            return "annotation"
        if self.action in DELETE_ACTIONS:
            return "delete"
        if self.action in TRAIN_ACTIONS:
            return "train"
        return "other"

    @property
    def project_id(self) -> int | None:
        """The project id, from ``project`` first, then from the annotations."""
        if self.project is not None:
            return self.project.id
        return next((a.project for a in self.annotation_list if a.project is not None), None)

    @property
    def annotation_list(self) -> list[Annotation]:
        """The event's annotations as a list, whichever shape they came in."""
        if self.annotation is None:
            return []
        return self.annotation if isinstance(self.annotation, list) else [self.annotation]

    @property
    def deleted_ids(self) -> list[int]:
        """Ids of deleted annotations, under either delete spelling."""
        if self.kind != "delete":
            return []
        refs = [ref.id for ref in self.annotations or []]
        return refs + [a.id for a in self.annotation_list if a.id is not None and a.id not in refs]
