"""The **Queue and review** page: the tasks chosen to label next and the review flags, with links into Label Studio."""

from __future__ import annotations

from dataclasses import dataclass, field

from state.decision_log import DecisionRow

__all__ = ["QueueItem", "QueueView", "queue_view", "task_link"]


@dataclass(frozen=True)
class QueueItem:
    """A task to label next, or a review flag: its reason and a link that opens it in Label Studio."""

    task: int
    reason: str
    link: str


@dataclass(frozen=True)
class QueueView:
    """The **Queue and review** page."""

    project: int
    selected_at: str | None
    selected_total: int
    selected: list[QueueItem]
    selection_note: str
    reviewed_at: str | None
    flags: list[QueueItem]
    label_next_link: str
    review_link: str
    notes: list[str] = field(default_factory=list)


def task_link(label_studio_url: str, project: int, task: int) -> str:
    """The Label Studio URL that opens ``task`` in its project's labeling view."""
    return f"{label_studio_url.rstrip('/')}/projects/{project}/data?task={task}"


def queue_view(
    project: int, select: DecisionRow | None, review: DecisionRow | None, *, label_studio_url: str
) -> QueueView:
    """Build the Queue and review page from the agent's latest done ``select`` and ``review`` decisions."""
    selected: list[QueueItem] = []
    total = 0
    note = "No selection yet: the agent selects when the queue runs low (or run `assistant select`)."
    if select is not None:
        total = int(select.outcome.get("chosen") or 0)
        for item in select.outcome.get("first") or []:
            with_task = dict(item)
            task = int(with_task.get("task", 0))
            selected.append(
                QueueItem(task, str(with_task.get("why") or ""), task_link(label_studio_url, project, task))
            )
        note = (
            f"The first {len(selected)} of {total} tasks chosen ({select.outcome.get('strategy', '?')} strategy); "
            "the whole queue is Label Studio's tab “Assistant: label next”."
        )
    flags: list[QueueItem] = []
    if review is not None:
        for flag in review.params.get("flags") or []:
            f = dict(flag)
            task = int(f.get("task", 0))
            quality = f.get("quality")
            why = str(f.get("why") or "")
            if quality is not None:
                why = f"{why} (label quality {float(quality):.2f})"
            flags.append(QueueItem(task, why, task_link(label_studio_url, project, task)))
    base = label_studio_url.rstrip("/")
    return QueueView(
        project=project,
        selected_at=None if select is None else select.at[:19],
        selected_total=total,
        selected=selected,
        selection_note=note,
        reviewed_at=None if review is None else review.at[:19],
        flags=flags,
        label_next_link=f"{base}/projects/{project}/data",
        review_link=f"{base}/projects/{project}/data",
    )
