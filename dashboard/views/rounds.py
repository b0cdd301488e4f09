"""The **Rounds** page: the round log (promoted, refused, failed), one round's report, the registry's versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.views.common import PAGE_SIZE, VERSIONS_SHOWN, num

__all__ = ["Page", "RoundDetail", "RoundRow", "RoundsView", "VersionRow", "round_detail", "rounds_view"]


@dataclass(frozen=True)
class RoundRow:
    """One round of the round log."""

    round_id: str
    status: str  # promoted, kept (refused), skipped, busy, failed
    finished_at: str
    trigger: str
    candidate: str | None
    metric: str
    change: str
    reason: str
    has_report: bool


@dataclass(frozen=True)
class VersionRow:
    """One registered version, with what the buttons may do to it."""

    version: str
    parent: str | None
    round_id: str | None
    created_at: str
    map: str
    current: bool


@dataclass(frozen=True)
class Page:
    """Where a paged table is: 1-based page number, and whether there are others."""

    number: int
    has_previous: bool
    has_next: bool


@dataclass(frozen=True)
class RoundsView:
    """The **Rounds** page."""

    project: int
    rounds: list[RoundRow]
    page: Page
    total: int
    failed: int
    versions: list[VersionRow]
    versions_total: int
    current: str
    can_roll_back: bool


def _round_status(entry: Mapping[str, Any]) -> str:
    status = str(entry.get("status") or "")
    if status:
        return status
    if entry.get("error"):
        return "failed"
    return "promoted" if entry.get("promoted") else "kept"


def _round_row(entry: Mapping[str, Any], reports: set[str]) -> RoundRow:
    metrics = dict(entry.get("metrics") or {})
    status = _round_status(entry)
    # A failed round (workers/rounds.py) logs its message as ``reason`` and the exception's class as ``error``.
    reason, error = str(entry.get("reason") or ""), str(entry.get("error") or "")
    if error and not reason.startswith(error):
        reason = f"{error}: {reason}" if reason else error
    delta = metrics.get("delta_mAP")
    round_id = str(entry.get("round_id") or "")
    return RoundRow(
        round_id=round_id,
        status=status,
        finished_at=str(entry.get("finished_at") or "")[:19].replace("T", " "),
        trigger=str(entry.get("trigger") or ""),
        candidate=entry.get("candidate_version") or entry.get("attempted_version"),
        metric=num(None if metrics.get("mAP") is None else float(metrics["mAP"]), 1),
        change="–" if delta is None else f"{float(delta):+.1f}",
        reason=reason,
        has_report=round_id in reports,
    )


def rounds_view(
    project: int,
    rounds: Sequence[Mapping[str, Any]],
    *,
    reports: set[str],
    versions: Sequence[Mapping[str, Any]],
    current: str,
    rollback_possible: bool,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> RoundsView:
    """Build the Rounds page: the round log newest first, one page, and the registry's versions.

    Args:
        project: The project.
        rounds: The round log, oldest first (one JSON object per finished round).
        reports: Round ids that have a report directory.
        versions: The project's registered versions (``VersionRecord`` as JSON), oldest first.
        current: The version in service.
        rollback_possible: The project has a promotion to undo.
        page: 1-based page of rounds.
        page_size: Rounds per page.
    """
    total = len(rounds)
    start = (page - 1) * page_size
    newest_first = rounds[::-1][start : start + page_size]
    rows = [_round_row(e, reports) for e in newest_first]
    failed = sum(1 for e in rounds if _round_status(e) == "failed")
    version_rows = [
        VersionRow(
            version=str(v.get("version")),
            parent=v.get("parent"),
            round_id=v.get("round_id"),
            created_at=str(v.get("created_at") or "")[:19].replace("T", " "),
            map=num(dict(v.get("metrics") or {}).get("mAP"), 1),
            current=v.get("version") == current,
        )
        for v in reversed(versions)
    ]
    # The newest versions (and the one in service, wherever it is): a registry of 1,000 rounds is not one table.
    shown = version_rows[:VERSIONS_SHOWN] + [v for v in version_rows[VERSIONS_SHOWN:] if v.current]
    return RoundsView(
        project=project,
        rounds=rows,
        page=Page(page, page > 1, start + page_size < total),
        total=total,
        failed=failed,
        versions=shown,
        versions_total=len(version_rows),
        current=current,
        can_roll_back=rollback_possible,
    )


@dataclass(frozen=True)
class RoundDetail:
    """One round's report: the Markdown (rendered by the web layer) and its plots."""

    project: int
    round: RoundRow | None
    markdown: str | None
    plots: list[str]


def round_detail(
    project: int, round_id: str, entry: Mapping[str, Any] | None, markdown: str | None, files: Sequence[str]
) -> RoundDetail:
    """Build one round's page (``entry``: its round-log line; ``files``: its report folder's files)."""
    row = None if entry is None else _round_row(entry, {round_id} if markdown is not None else set())
    plots = sorted(f for f in files if f.lower().endswith((".png", ".svg")))
    return RoundDetail(project=project, round=row, markdown=markdown, plots=plots)
