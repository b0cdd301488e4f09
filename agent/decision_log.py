"""The agent's view of the decision log: its rows as :class:`~assistant.agent_policy.Decision` records.

The log's table, its rows and its reads live in :mod:`state.decision_log` (one store, which the
dashboard reads too). This module only types them for the agent: it writes a decision with its
reason, params and what it saw, and reads rows back as :class:`Record` (a ``Decision`` in one
state), where ``Decision.from_json`` checks the action is one the policy knows.

The agent writes ``pending`` *before* it acts and reads the log back when it starts, so a killed
agent resumes its ``pending``/``running`` decisions and never runs a ``done`` key again.

Example:
    >>> log = open_decision_log(None, home=Path("/tmp/assistant"))             # doctest: +SKIP
    >>> log.append(decision, "pending")                                        # doctest: +SKIP
    >>> log.latest(decision.key).status                                        # doctest: +SKIP
    'pending'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from assistant.agent_policy import Decision
from state.decision_log import UNFINISHED, DecisionRow, DecisionRows, RecordStatus, open_decision_rows

__all__ = ["DecisionLog", "Record", "open_decision_log"]


@dataclass(frozen=True)
class Record:
    """One row: a decision in one state.

    Attributes:
        seq: Position in the log.
        at: When the row was written (UTC).
        status: The state.
        attempt: Which try (1 for the first).
        decision: The decision.
        outcome: What happened (JSON-ready; empty while pending).
    """

    seq: int
    at: dt.datetime
    status: RecordStatus
    attempt: int
    decision: Decision
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The decision's key."""
        return self.decision.key

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (``assistant agent log --json``)."""
        decision = self.decision.to_json()
        decision.pop("status")  # the record's status says more (a deferred decision is a deferred record)
        return {
            "seq": self.seq,
            "at": self.at.isoformat(timespec="seconds"),
            **decision,
            "status": self.status,
            "attempt": self.attempt,
            "outcome": self.outcome,
        }


def _record(row: DecisionRow) -> Record:
    decision = Decision.from_json(
        {
            "action": row.action,
            "project": row.project,
            "key": row.key,
            "reason": row.reason,
            "params": row.params,
            "saw": row.saw,
            "status": row.decided,
        }
    )
    status = cast(RecordStatus, row.status)
    return Record(row.seq, dt.datetime.fromisoformat(row.at), status, row.attempt, decision, row.outcome)


class DecisionLog:
    """The agent's append-only decision log (module docstring). Thread-safe.

    Use :func:`open_decision_log`.

    Attributes:
        rows: The store underneath (:mod:`state.decision_log`).
        description: Where the log lives, for people (``sqlite <path>`` or a redacted URL).
    """

    def __init__(self, rows: DecisionRows) -> None:
        self.rows = rows
        self.description = rows.description

    def close(self) -> None:
        """Close the connection."""
        self.rows.close()

    def append(
        self,
        decision: Decision,
        status: RecordStatus,
        outcome: dict[str, Any] | None = None,
        *,
        attempt: int | None = None,
        at: dt.datetime | None = None,
    ) -> Record:
        """Write one row: ``decision`` is now in ``status``.

        Args:
            decision: The decision.
            status: Its new state.
            outcome: What happened (JSON-ready).
            attempt: Which try; default: the key's latest row's attempt (1 for a new key).
            at: The time (default: now, UTC).

        Raises:
            ValueError: An unknown status, or an outcome that is not JSON.
        """
        row = self.rows.append(
            decision.project,
            decision.key,
            decision.action,
            status,
            reason=decision.reason,
            params=decision.params,
            saw=decision.saw,
            decided=decision.status,
            outcome=outcome,
            attempt=attempt,
            at=at,
        )
        return Record(row.seq, dt.datetime.fromisoformat(row.at), status, row.attempt, decision, row.outcome)

    def latest(self, key: str) -> Record | None:
        """The latest row of a key, or None when the key was never logged."""
        row = self.rows.latest_of(key)
        return None if row is None else _record(row)

    def records(
        self, project: int | None = None, *, since: int = 0, limit: int | None = None, newest: bool = False
    ) -> list[Record]:
        """Rows in log order (or the newest ``limit`` ones, still in log order, with ``newest``)."""
        return [_record(r) for r in self.rows.rows(project, since=since, limit=limit, newest=newest)]

    def states(self, project: int | None = None) -> list[Record]:
        """The latest row of every key, in the order the keys first appeared."""
        return [_record(r) for r in self.rows.states(project)]

    def unfinished(self, project: int) -> list[Record]:
        """Decisions left ``pending`` or ``running`` (by a killed agent), oldest first."""
        return [r for r in self.states(project) if r.status in UNFINISHED]

    def last(self, project: int, actions: Sequence[str], status: RecordStatus = "done") -> Record | None:
        """The latest row of one of ``actions`` in ``status``."""
        row = self.rows.latest(project, statuses=(status,), actions=actions)
        return None if row is None else _record(row)

    def done_since(self, project: int, since: dt.datetime, actions: Sequence[str]) -> list[Record]:
        """Rows ``done`` at or after ``since`` for ``actions`` (the day's budget)."""
        return [_record(r) for r in self.rows.done_since(project, since, actions)]


def open_decision_log(url: str | None, *, home: Path | None = None, table_prefix: str = "assistant_") -> DecisionLog:
    """Open (and create if needed) the decision log (:func:`state.decision_log.open_decision_rows`).

    Raises:
        DecisionLogError: Unknown URL scheme, no ``home`` for the default, a bad prefix, or the
            database cannot be opened.
    """
    return DecisionLog(open_decision_rows(url, home=home, table_prefix=table_prefix))
