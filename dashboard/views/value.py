"""The **Value** page: edits against labeling from scratch, per model version and per tag (honest when negative)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.views.common import num, pct

__all__ = ["Bar", "TagRow", "ValueView", "VersionEffortRow", "bars", "value_view"]


@dataclass(frozen=True)
class VersionEffortRow:
    """Edits per task against from scratch with one model version."""

    model_version: str
    first_at: str
    last_at: str
    tasks: int
    edits_per_task: str
    scratch_per_task: str
    saved: float | None  # share of labeling work saved; negative: pre-annotation cost more
    verdict: str


@dataclass(frozen=True)
class TagRow:
    """One tag: what it saved (negative: cost), the shown tags' precision and recall, the guard."""

    tag: str
    kept: int
    removed: int
    added: int
    saved: float
    precision: str
    recall: str
    novel: bool
    guard: str


@dataclass(frozen=True)
class Bar:
    """One model version in the bar chart: edits per task and from scratch per task, as chart heights (0-1)."""

    label: str
    edits: float
    scratch: float
    edits_h: float
    scratch_h: float


def bars(versions: Sequence[Mapping[str, Any]]) -> list[Bar]:
    """The Value page's chart: per model version in time order, both heights scaled to the tallest bar."""
    pairs = [
        (
            str(v.get("model_version", "?")),
            float(v.get("edits_per_task") or 0.0),
            float(v.get("scratch_per_task") or 0.0),
        )
        for v in sorted(versions, key=lambda v: str(v.get("first_at") or ""))
        if int(v.get("tasks") or 0) > 0
    ]
    top = max((max(e, s) for _, e, s in pairs), default=0.0) or 1.0
    return [Bar(label, e, s, e / top, s / top) for label, e, s in pairs]


@dataclass(frozen=True)
class ValueView:
    """The **Value** page."""

    project: int
    headline: str
    negative: bool  # the saving is below zero: the page says it in red, first
    counted: int
    pending: int
    versions: list[VersionEffortRow]
    tags: list[TagRow]
    tripped: list[str]
    chart: list[Bar]
    plot: str | None  # the latest round report's edits-over-time plot (a file name under that round)
    plot_round: str | None
    error: str | None


def _verdict(saved: float | None, tasks: int) -> str:
    if saved is None or tasks == 0:
        return "not measured yet"
    if saved < 0:
        return f"costs {pct(-saved)} more edits than labeling from scratch"
    if saved == 0:
        return "saves nothing"
    return f"saves {pct(saved)} of the edits"


def value_view(
    project: int,
    effort: Mapping[str, Any] | None,
    *,
    plot: str | None = None,
    plot_round: str | None = None,
    error: str | None = None,
) -> ValueView:
    """Build the Value page from ``state.effort_summary.project_effort``'s figures (None: no ledger).

    Tags are sorted by what they save, the costliest first: the top of the table is where the
    annotators lose time.
    """
    effort = effort or {}
    totals = dict(effort.get("totals") or {})
    tasks = int(totals.get("tasks") or 0)
    saved = totals.get("saved_share")
    saved_f = None if saved is None else float(saved)
    in_service = effort.get("in_service")
    if tasks == 0:
        headline = "No annotation counted yet: nothing to compare with labeling from scratch."
    else:
        headline = f"Over {tasks} annotated tasks, pre-annotation {_verdict(saved_f, tasks)}"
        if in_service:
            s = in_service.get("saved_share")
            served = _verdict(None if s is None else float(s), int(in_service.get("tasks") or 0))
            headline += f"; with the model in service it {served}"
        headline += "."
    versions = [
        VersionEffortRow(
            model_version=str(v.get("model_version", "?")),
            first_at=str(v.get("first_at") or "")[:19].replace("T", " "),
            last_at=str(v.get("last_at") or "")[:19].replace("T", " "),
            tasks=int(v.get("tasks") or 0),
            edits_per_task=num(v.get("edits_per_task")),
            scratch_per_task=num(v.get("scratch_per_task")),
            saved=None if v.get("saved_share") is None else float(v["saved_share"]),
            verdict=_verdict(
                None if v.get("saved_share") is None else float(v["saved_share"]), int(v.get("tasks") or 0)
            ),
        )
        for v in effort.get("versions") or []
    ]
    versions.sort(key=lambda r: r.first_at)
    tags = [
        TagRow(
            tag=str(name),
            kept=int(t.get("kept") or 0),
            removed=int(t.get("removed") or 0),
            added=int(t.get("added") or 0),
            saved=float(t.get("saved") or 0.0),
            precision=pct(t.get("precision")),
            recall=pct(t.get("recall")),
            novel=bool(t.get("novel")),
            guard=str(t.get("guard") or "shown"),
        )
        for name, t in dict(effort.get("tags") or {}).items()
    ]
    tags.sort(key=lambda r: (r.saved, r.tag))
    guard = dict(effort.get("guard") or {})
    counting = dict(effort.get("counting") or {})
    return ValueView(
        project=project,
        headline=headline,
        negative=saved_f is not None and tasks > 0 and saved_f < 0,
        counted=int(counting.get("counted") or 0),
        pending=int(counting.get("pending") or 0),
        versions=versions,
        tags=tags,
        tripped=[str(g.get("tag")) for g in guard.get("tripped") or []],
        chart=bars(effort.get("versions") or []),
        plot=plot,
        plot_round=plot_round,
        error=error or (str(counting["error"]) if counting.get("error") else None),
    )
