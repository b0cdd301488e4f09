"""The decision log as the dashboard reads it: one page of decisions at a time, and audit rows.

The log's home is ``state/decision_log.py`` (the agent writes it; its module docstring describes the table).
The web tier must not import the agent (it would pull the policy core into the backend), so this
module reads the same table with plain SQL through the same store (``state.sqlstore``), and
writes one kind of row itself: the audit of a promotion or rollback made from the dashboard
(action ``promote``/``rollback``, status ``done``, who and when). ``tests/dashboard`` checks that the
agent's own reader parses those rows, so the two stay in step.

Reads are paged with keyset pagination (``seq < before``) on the ``(project, seq)`` index and one
more index this module adds, ``(project, action, seq)``, so a page costs the same on 100 or 100,000
decisions. A decision is shown in its latest state (the newest row of its key).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from errors import AssistantError
from state.sqlstore import SQLStore, open_store

__all__ = [
    "AUDIT_ACTIONS",
    "DecisionLogUnavailable",
    "DecisionPage",
    "DecisionRow",
    "DecisionRows",
    "open_decision_rows",
]

#: Actions the dashboard writes (people acting on the registry), next to the agent's own.
AUDIT_ACTIONS: Final = ("promote", "rollback")
# The agent's default SQLite file under Settings.home (state/decision_log.py's AGENT_LOG_FILE).
_FILE: Final = "agent.sqlite3"


def _schema(prefix: str, *, postgres: bool) -> list[str]:
    # The agent's table (state/decision_log.py::_schema), created here too so that an audit row can be
    # written before the agent ever ran; plus the index for the page filtered by action.
    seq = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
    big = "BIGINT" if postgres else "INTEGER"
    table = f"{prefix}agent_decisions"
    return [
        f"""CREATE TABLE IF NOT EXISTS {table} (
            seq {seq},
            at TEXT NOT NULL,
            project {big} NOT NULL,
            key TEXT NOT NULL,
            action TEXT NOT NULL,
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            decision TEXT NOT NULL,
            outcome TEXT NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {table}_project_seq ON {table} (project, seq)",
        f"CREATE INDEX IF NOT EXISTS {table}_key_seq ON {table} (key, seq)",
        f"CREATE INDEX IF NOT EXISTS {table}_project_action_seq ON {table} (project, action, seq)",
    ]


@dataclass(frozen=True)
class DecisionRow:
    """One decision in its latest state.

    Attributes:
        seq: Position of that row in the log.
        at: When the row was written (ISO, UTC).
        project: The project.
        key: The decision's key.
        action: What (``train``, ``select``, ..., or ``promote``/``rollback`` from the dashboard).
        status: ``pending``, ``running``, ``done``, ``failed`` or ``deferred``.
        attempt: Which try.
        reason: Why, for people.
        params: What the executor needed.
        saw: What the policy looked at.
        outcome: What happened.
    """

    seq: int
    at: str
    project: int
    key: str
    action: str
    status: str
    attempt: int
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    saw: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionPage:
    """One page, newest first; ``next_before`` is the cursor of the next (older) page, None at the end."""

    rows: list[DecisionRow]
    next_before: int | None


_COLUMNS: Final = "seq, at, project, key, action, status, attempt, decision, outcome"


def _row(values: Sequence[Any]) -> DecisionRow:
    seq, at, project, key, action, status, attempt, decision, outcome = values
    body = json.loads(decision) if decision else {}
    return DecisionRow(
        seq=int(seq),
        at=str(at),
        project=int(project),
        key=str(key),
        action=str(action),
        status=str(status),
        attempt=int(attempt),
        reason=str(body.get("reason", "")),
        params=dict(body.get("params") or {}),
        saw=dict(body.get("saw") or {}),
        outcome=dict(json.loads(outcome) if outcome else {}),
    )


class DecisionRows:
    """Reads decision pages and writes audit rows (module docstring). Use :func:`open_decision_rows`."""

    def __init__(self, store: SQLStore, prefix: str) -> None:
        self._store = store
        self._table = f"{prefix}agent_decisions"
        self._p = store.placeholder

    def close(self) -> None:
        """Close the connection."""
        self._store.close()

    def page(
        self,
        project: int,
        *,
        action: str | None = None,
        status: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> DecisionPage:
        """The newest ``limit`` decisions (latest state of each key) older than ``before``."""
        p, t = self._p, self._table
        where = [f"a.project = {p}"]
        args: list[Any] = [project]
        if action:
            where.append(f"a.action = {p}")
            args.append(action)
        if status:
            where.append(f"a.status = {p}")
            args.append(status)
        if before is not None:
            where.append(f"a.seq < {p}")
            args.append(before)
        # The latest row of its key: no newer row with the same key (the key index answers it).
        where.append(f"NOT EXISTS (SELECT 1 FROM {t} b WHERE b.key = a.key AND b.seq > a.seq)")
        sql = f"SELECT {_COLUMNS} FROM {t} a WHERE {' AND '.join(where)} ORDER BY a.seq DESC LIMIT {int(limit) + 1}"
        with self._store.cursor() as cur:
            cur.execute(sql, tuple(args))
            found = [_row(r) for r in cur.fetchall()]
        more = len(found) > limit
        rows = found[:limit]
        return DecisionPage(rows, rows[-1].seq if more and rows else None)

    def latest(self, project: int, *, statuses: Sequence[str] = (), actions: Sequence[str] = ()) -> DecisionRow | None:
        """The newest row of the project (in one of ``statuses``/``actions`` when given)."""
        p = self._p
        where = [f"project = {p}"]
        args: list[Any] = [project]
        if statuses:
            where.append(f"status IN ({', '.join([p] * len(statuses))})")
            args.extend(statuses)
        if actions:
            where.append(f"action IN ({', '.join([p] * len(actions))})")
            args.extend(actions)
        sql = f"SELECT {_COLUMNS} FROM {self._table} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT 1"
        with self._store.cursor() as cur:
            cur.execute(sql, tuple(args))
            row = cur.fetchone()
        return None if row is None else _row(row)

    def unfinished(self, project: int, *, limit: int = 5, window: int = 500) -> list[DecisionRow]:
        """Decisions whose latest state is ``pending`` or ``running`` (what the agent is doing), newest first.

        Only the newest ``window`` rows are read: the agent finishes what it starts before it decides
        more (a round it follows writes nothing meanwhile), so what is open sits at the end of the log,
        and the Now page stays one indexed read on a log of any length.
        """
        sql = f"SELECT {_COLUMNS} FROM {self._table} WHERE project = {self._p} ORDER BY seq DESC LIMIT {int(window)}"
        with self._store.cursor() as cur:
            cur.execute(sql, (project,))
            rows = [_row(r) for r in cur.fetchall()]
        latest: dict[str, DecisionRow] = {}
        for row in rows:  # newest first: the first row of a key is its state
            latest.setdefault(row.key, row)
        return [r for r in latest.values() if r.status in ("pending", "running")][:limit]

    def has(self, project: int) -> bool:
        """Whether the project has a decision (one indexed read)."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {self._table} WHERE project = {self._p} LIMIT 1", (project,))
            return cur.fetchone() is not None

    def projects(self) -> list[int]:
        """Projects with at least one decision."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT DISTINCT project FROM {self._table}")
            return sorted(int(r[0]) for r in cur.fetchall())

    def audit(
        self, project: int, action: Literal["promote", "rollback"], *, who: str, version: str, previous: str
    ) -> DecisionRow:
        """Write that ``who`` moved the project's model from ``previous`` to ``version`` (status ``done``)."""
        when = dt.datetime.now(dt.UTC)
        key = f"{action}:p{project}:{version}:{when.strftime('%Y%m%dT%H%M%S.%f')}"
        verb = "promoted" if action == "promote" else "rolled back to"
        reason = f"{who} {verb} {version} (was {previous}) from the dashboard"
        params: dict[str, Any] = {"version": version, "previous": previous}
        saw: dict[str, Any] = {"by": who, "via": "dashboard"}
        body = {"reason": reason, "params": params, "saw": saw, "status": "decided"}
        outcome = {"version": version, "previous": previous, "by": who}
        p = self._p
        values = (when.isoformat(), project, key, action, "done", 1, json.dumps(body, sort_keys=True))
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self._table} (at, project, key, action, status, attempt, decision, outcome) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) RETURNING seq",
                (*values, json.dumps(outcome, sort_keys=True)),
            )
            seq = int(cur.fetchone()[0])
        return DecisionRow(seq, when.isoformat(), project, key, action, "done", 1, reason, params, saw, outcome)


class DecisionLogUnavailable(AssistantError):
    """The decision log cannot be opened (bad URL, unreachable database)."""


def open_decision_rows(url: str | None, *, home: Path | None, table_prefix: str = "assistant_") -> DecisionRows:
    """Open the decision log (``ASSISTANT_AGENT_LOG_URL``, else SQLite ``<home>/agent.sqlite3``).

    Raises:
        DecisionLogUnavailable: The URL is unknown or the database cannot be opened.
    """
    store = open_store(
        url,
        home=home,
        file=_FILE,
        schema=lambda postgres: _schema(table_prefix, postgres=postgres),
        table_prefix=table_prefix,
        error=DecisionLogUnavailable,
        what="decision log",
        url_setting="ASSISTANT_AGENT_LOG_URL",
        busy_s=10.0,
    )
    return DecisionRows(store, table_prefix)
