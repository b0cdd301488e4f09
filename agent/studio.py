"""What the agent reads from Label Studio: a project's summary, its tasks and its predictions.

Through the one Label Studio client (:class:`studio.client.LabelStudioClient`: explicit URL and
token, errors as :class:`~studio.errors.StudioError`); this module only shapes its answers. One
look at a project costs one request for the project, a page per 1,000 tasks, and one request for
its predictions; the summary alone (:meth:`StudioReader.summary`, one request) tells whether
anything changed since the last look.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from backends.ordering import RANK_FIELD, REVIEW_FIELD
from studio.client import LabelStudioClient, is_labeled

__all__ = ["PredictionRow", "ProjectSummary", "StudioReader", "TaskRow"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectSummary:
    """Counters Label Studio keeps per project, and a digest of the labeling config.

    Attributes:
        project: The project.
        title: Its title.
        config_digest: sha256 of the labeling config (first 16 hex digits).
        tasks: ``task_number``.
        annotations: ``total_annotations_number``.
        predictions: ``total_predictions_number``.
        labeled: ``num_tasks_with_annotations``.
        label_config: The labeling config itself.
    """

    project: int
    title: str
    config_digest: str
    tasks: int
    annotations: int
    predictions: int
    labeled: int
    label_config: str = field(repr=False, default="")

    def counters(self) -> tuple[Any, ...]:
        """What changes when something happens in the project."""
        return (self.config_digest, self.tasks, self.annotations, self.predictions, self.labeled)


@dataclass(frozen=True)
class TaskRow:
    """One task as the agent needs it.

    Attributes:
        id: The task id.
        data: Its data (image URL, and the ranks the agent pushed).
        labeled: It has a (non-cancelled) annotation.
    """

    id: int
    data: dict[str, Any]
    labeled: bool

    @property
    def rank(self) -> int | None:
        """Its place in the selected queue (``data.assistant_rank``), if it has one."""
        value = self.data.get(RANK_FIELD)
        return int(value) if isinstance(value, int | float) and value >= 1 else None

    @property
    def review_rank(self) -> int | None:
        """Its place in the review queue (``data.assistant_review``), if it has one."""
        value = self.data.get(REVIEW_FIELD)
        return int(value) if isinstance(value, int | float) and value >= 1 else None


@dataclass(frozen=True)
class PredictionRow:
    """One stored prediction.

    Attributes:
        id: The prediction id.
        task: Its task.
        model_version: The version it was made with.
        result: Its result items (with the per-tag scores under ``assistant``).
        created_at: Label Studio's creation time (ISO text).
    """

    id: int
    task: int
    model_version: str
    result: list[dict[str, Any]]
    created_at: str = ""


class StudioReader:
    """Reads projects, tasks and predictions.

    Args:
        client: The SDK wrapper.
    """

    def __init__(self, client: LabelStudioClient) -> None:
        self.client = client

    def summary(self, project: int) -> ProjectSummary:
        """The project's counters and config (one request)."""
        return _summary(self.client.project(project))

    def projects(self) -> list[ProjectSummary]:
        """Every project the token can see."""
        return [_summary(raw) for raw in self.client.projects()]

    def tasks(self, project: int) -> list[TaskRow]:
        """Every task of the project: id, data, and whether it is labeled."""
        # As backends.bulk's unlabeled filter, so the agent and the plan agree on what to predict.
        return [
            TaskRow(id=int(task["id"]), data=dict(task.get("data") or {}), labeled=is_labeled(task))
            for task in self.client.task_rows(project)
        ]

    def predictions(self, project: int) -> list[PredictionRow]:
        """Every prediction of the project (one request)."""
        out = []
        for pred in self.client.predictions(project):
            if pred.get("task") is None or pred.get("id") is None:
                continue
            result = pred.get("result")
            out.append(
                PredictionRow(
                    id=int(pred["id"]),
                    task=int(pred["task"]),
                    model_version=str(pred.get("model_version") or ""),
                    result=[r for r in result if isinstance(r, dict)] if isinstance(result, list) else [],
                    created_at=str(pred.get("created_at") or ""),
                )
            )
        return out


def _summary(raw: dict[str, Any]) -> ProjectSummary:
    config = str(raw.get("label_config") or "")
    return ProjectSummary(
        project=int(raw["id"]),
        title=str(raw.get("title") or ""),
        config_digest=hashlib.sha256(config.encode("utf-8")).hexdigest()[:16],
        tasks=int(raw.get("task_number") or 0),
        annotations=int(raw.get("total_annotations_number") or 0),
        predictions=int(raw.get("total_predictions_number") or 0),
        labeled=int(raw.get("num_tasks_with_annotations") or 0),
        label_config=config,
    )
