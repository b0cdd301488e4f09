"""The **Agent** page: the decision log as a story, filterable by action, each row expandable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from state.decision_log import DECISION_ACTIONS, DecisionRow

__all__ = ["AGENT_ACTIONS", "AgentView", "StoryRow", "agent_view"]


@dataclass(frozen=True)
class StoryRow:
    """One decision, as a line of ``assistant agent log``, with what the policy saw to expand."""

    seq: int
    at: str
    action: str
    status: str
    attempt: int
    line: str
    params: dict[str, Any]
    saw: dict[str, Any]
    outcome: dict[str, Any]


@dataclass(frozen=True)
class AgentView:
    """The **Agent** page."""

    project: int
    action: str | None
    actions: list[str]
    rows: list[StoryRow]
    next_before: int | None
    before: int | None


#: The filter's choices: the policy's actions, then what people do from the dashboard (the log's own list).
AGENT_ACTIONS: Final = DECISION_ACTIONS


def _outcome_text(row: DecisionRow) -> str:
    out = row.outcome
    if row.status == "failed" and out.get("error"):
        return f" → failed: {out['error']}"
    if row.status in {"pending", "running"}:
        return f" ({row.status})"
    shown = {k: v for k, v in out.items() if isinstance(v, str | int | float) and not isinstance(v, bool)}
    if not shown:
        return ""
    parts = [f"{k}={v}" for k, v in list(shown.items())[:4]]
    return " → " + ", ".join(parts)


def agent_view(
    project: int, rows: Sequence[DecisionRow], *, action: str | None, next_before: int | None, before: int | None
) -> AgentView:
    """Build the Agent page: one line per decision (its latest state), newest first, one page."""
    story = [
        StoryRow(
            seq=r.seq,
            at=r.at[:19].replace("T", " "),
            action=r.action,
            status=r.status,
            attempt=r.attempt,
            line=r.reason + _outcome_text(r),
            params=dict(r.params),
            saw=dict(r.saw),
            outcome=dict(r.outcome),
        )
        for r in rows
    ]
    return AgentView(
        project=project,
        action=action,
        actions=list(AGENT_ACTIONS),
        rows=story,
        next_before=next_before,
        before=before,
    )
