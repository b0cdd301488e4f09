"""Reading a Label Studio export: each task's latest annotation, as a correction.

A round re-reads the whole project (``LabelStudioClient.export``, the tasks with their
annotations, and ``LabelStudioClient.predictions``) because Label Studio is the source of truth:
its webhooks are one-try, so the ledger may miss events. For each task the **latest**
non-cancelled annotation counts (by ``updated_at``, then id), and it is compared with the
prediction it started from (``parent_prediction``) by :func:`studio.results.annotation_to_correction`,
the same rule the backend and the agent use.

An export is read tolerantly: a result item that is not a control's result (a relation, an item
of another tool with no ``value``) is skipped, never fatal, so one odd task cannot fail a round.

Example:
    >>> from studio.config import parse_label_config
    >>> vocab = parse_label_config('''<View><Image name="image" value="$image"/>
    ...   <Choices name="tags" toName="image" choice="multiple"><Choice value="cat"/></Choices></View>''')
    >>> item = {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
    >>> tasks = [{"id": 7, "data": {"image": "/a.png"}, "annotations": [{"id": 1, "result": [item]}]}]
    >>> (found,), unannotated = read_export(tasks, {}, vocab)
    >>> found.task_id, found.correction.positive_labels, unannotated
    (7, ('cat',), 0)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from studio.controls import ProjectVocabulary
from studio.protocol import Annotation, Prediction, ResultItem
from studio.results import Correction, annotation_to_correction

__all__ = ["ExportedAnnotation", "latest_annotation", "parse_time", "prediction_index", "read_export", "result_items"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedAnnotation:
    """One task's latest annotation in an export.

    Attributes:
        task_id: The Label Studio task.
        data: The task's data (image URLs under the config's data keys).
        annotation_id: The annotation, when the export names it.
        annotated_at: When it was last changed (None when the export does not say).
        correction: What it says about the model labels, against its parent prediction.
    """

    task_id: int
    data: Mapping[str, Any]
    annotation_id: int | None
    annotated_at: dt.datetime | None
    correction: Correction


def parse_time(text: Any) -> dt.datetime | None:
    """An ISO timestamp as Label Studio writes it (``...Z`` included) in UTC; None when unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def latest_annotation(annotations: Iterable[Any]) -> Mapping[str, Any] | None:
    """The latest non-cancelled annotation (by ``updated_at`` or ``created_at``, then id), or None."""
    usable = [a for a in annotations if isinstance(a, Mapping) and not a.get("was_cancelled")]
    if not usable:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(
        usable, key=lambda a: (parse_time(a.get("updated_at") or a.get("created_at")) or epoch, a.get("id") or 0)
    )


def result_items(raw: Any) -> list[ResultItem]:
    """The control results of a ``result`` list; anything else in it (relations, broken items) is skipped."""
    items: list[ResultItem] = []
    for item in raw if isinstance(raw, list) else []:
        try:
            items.append(ResultItem.model_validate(item))
        except ValidationError:
            continue
    return items


def prediction_index(predictions: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Predictions by id (``LabelStudioClient.predictions`` lists them), for parent lookups."""
    return {int(p["id"]): p for p in predictions if isinstance(p, Mapping) and isinstance(p.get("id"), int)}


def _id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _parent(annotation: Mapping[str, Any], predictions: Mapping[int, Mapping[str, Any]]) -> Prediction | None:
    parent_id = _id(annotation.get("parent_prediction"))
    found = predictions.get(parent_id) if parent_id is not None else None
    if found is None:
        return None
    version = found.get("model_version")
    return Prediction(
        id=parent_id,
        model_version=version if isinstance(version, str) else "",
        result=result_items(found.get("result")),
    )


def read_export(
    tasks: Iterable[Mapping[str, Any]], predictions: Mapping[int, Mapping[str, Any]], vocab: ProjectVocabulary
) -> tuple[list[ExportedAnnotation], int]:
    """Each task's latest annotation as a correction (see the module docstring).

    Args:
        tasks: ``LabelStudioClient.export`` output (tasks with their annotations).
        predictions: Prediction id -> prediction (:func:`prediction_index`), for the parents.
        vocab: The project's current vocabulary.

    Returns:
        The annotated tasks, and how many tasks had no usable (non-cancelled) annotation.
    """
    found: list[ExportedAnnotation] = []
    unannotated = 0
    for task in tasks:
        raw = latest_annotation(task.get("annotations") or [])
        task_id = _id(task.get("id"))
        if raw is None or task_id is None:
            unannotated += 1
            continue
        annotation = Annotation(id=_id(raw.get("id")), task=task_id, result=result_items(raw.get("result")))
        correction = annotation_to_correction(vocab, annotation, _parent(raw, predictions))
        data = task.get("data")
        found.append(
            ExportedAnnotation(
                task_id=task_id,
                data=data if isinstance(data, Mapping) else {},
                annotation_id=annotation.id,
                annotated_at=parse_time(raw.get("updated_at") or raw.get("created_at")),
                correction=correction,
            )
        )
    return found, unannotated
