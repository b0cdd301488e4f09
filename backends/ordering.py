"""Push an order of tasks into Label Studio: a task data field and a saved Data Manager view.

The open-source Label Studio has no active-learning sampling (``Uncertainty sampling`` is
Enterprise-only), but its Data Manager queue follows a tab's filters and ordering: "Label All
Tasks" from a tab serves its tasks in the tab's order. So an order is pushed as

1. a number in each chosen task's data, ``data[field] = rank`` (1 = label first), and nothing in
   any other task's (a previous push's ranks are cleared);
2. a saved view (a Data Manager tab) titled ``title``, filtered to tasks that carry the field and
   sorted by it, numerically (``columnsDisplayType`` Number; without it Label Studio sorts the
   JSON values as text, and rank 10 comes before rank 2).

The predictions' own ``score`` is left alone: it keeps one meaning for every model version (the
confidence of ``backends/convert.py``), so "Prediction score, ascending" still lists the most
uncertain tasks first whatever strategy ordered the tab.

Only the light SDK edge is used here (no torch, no assistant): the CLI composes it with the
workers' answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from studio.client import LabelStudioClient
from studio.protocol import Task

__all__ = [
    "RANK_FIELD",
    "REVIEW_FIELD",
    "REVIEW_VIEW",
    "SELECT_VIEW",
    "PushReport",
    "RankedTask",
    "push_order",
    "view_data",
]

logger = logging.getLogger(__name__)

#: Data field of the selection order (``assistant select``).
RANK_FIELD: Final = "assistant_rank"
#: Data field of the review order (``assistant review``).
REVIEW_FIELD: Final = "assistant_review"
#: Tab titles.
SELECT_VIEW: Final = "Assistant: label next"
REVIEW_VIEW: Final = "Assistant: review"


@dataclass(frozen=True)
class RankedTask:
    """One task of a pushed order.

    Attributes:
        task_id: The Label Studio task.
        rank: 1 for the task to open first.
        reason: Why it is in the order (shown by the CLI; not stored in Label Studio).
    """

    task_id: int
    rank: int
    reason: str = ""


@dataclass(frozen=True)
class PushReport:
    """What a push changed.

    Attributes:
        view_id: The saved view (created or updated).
        ranked: Tasks that got a rank.
        cleared: Tasks whose rank from an earlier push was removed.
        view_created: False when an existing view of the same title was updated.
    """

    view_id: int
    ranked: int
    cleared: int
    view_created: bool


def view_data(field: str, title: str) -> dict[str, Any]:
    """The Data Manager view payload: tasks with ``data[field]``, sorted by it, ascending."""
    column = f"tasks:data.{field}"
    return {
        "title": title,
        "ordering": [column],
        "filters": {
            "conjunction": "and",
            "items": [{"filter": f"filter:{column}", "operator": "greater_or_equal", "type": "Number", "value": 1}],
        },
        # Numeric ordering of a data field needs this (data_manager/managers.py apply_ordering).
        "columnsDisplayType": {column: "Number"},
    }


def push_order(
    client: LabelStudioClient,
    project: int,
    ranked: Sequence[RankedTask],
    tasks: Sequence[Task],
    *,
    field: str = RANK_FIELD,
    title: str = SELECT_VIEW,
) -> PushReport:
    """Write the ranks into the tasks' data and save (or update) the ordered view.

    Args:
        client: The Label Studio client.
        project: The project.
        ranked: The order (ranks need not be contiguous, but must be >= 1).
        tasks: Every task of the project with its current data (to keep the other keys and to
            clear ranks of an earlier push).
        field: The data field.
        title: The view's title; an existing view with this title is updated.

    Returns:
        What changed.
    """
    by_id = {t.id: t for t in tasks}
    wanted = {r.task_id: r.rank for r in ranked}
    missing = sorted(set(wanted) - set(by_id))
    if missing:
        raise ValueError(f"tasks {missing[:5]} are not in project {project}")
    cleared = 0
    for task in tasks:
        if field in task.data and task.id not in wanted:
            data = {k: v for k, v in task.data.items() if k != field}
            _update_data(client, task.id, data)
            cleared += 1
    for task_id, rank in wanted.items():
        current = by_id[task_id].data
        if current.get(field) != rank:
            _update_data(client, task_id, {**current, field: rank})
    view_id, created = _save_view(client, project, view_data(field, title))
    logger.info(
        "project %d: pushed %d ranks into data.%s (%d cleared), view %d %s",
        project,
        len(wanted),
        field,
        cleared,
        view_id,
        "created" if created else "updated",
    )
    return PushReport(view_id=view_id, ranked=len(wanted), cleared=cleared, view_created=created)


def _update_data(client: LabelStudioClient, task_id: int, data: dict[str, Any]) -> None:
    # PATCH replaces `data` as a whole, so the caller passes every key the task had.
    client.update_task_data(task_id, data)


def _save_view(client: LabelStudioClient, project: int, data: dict[str, Any]) -> tuple[int, bool]:
    for doc in client.views(project):
        if (doc.get("data") or {}).get("title") == data["title"]:
            view_id = int(doc["id"])
            _update_view(client, project, view_id, data)
            return view_id, False
    return client.create_view(project, data), True


def _update_view(client: LabelStudioClient, project: int, view_id: int, data: dict[str, Any]) -> None:
    client.update_view(project, view_id, data)
