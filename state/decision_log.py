"""The decision log: every decision of the agent, what it saw, why, and how it ended. Append-only.

Each change of a decision's state is a new row; the latest row of a key is its state::

    pending   decided and persisted, nothing done yet
    running   side effects started (a round queued: its Celery task id is in the outcome)
    done      finished; the outcome says what happened
    failed    finished without success; retried later under the same key (PolicyConfig.max_attempts)
    deferred  the policy wanted it, a limit forbids it now (a budget, an interval); never executed

The agent writes ``pending`` *before* it acts and reads the log back when it starts, so a killed
agent resumes its ``pending``/``running`` decisions and never runs a ``done`` key again.

Two stores behind one API (``state.sqlstore``: stdlib ``sqlite3``, ``psycopg`` only for PostgreSQL):

- SQLite (default): ``<Settings.home>/agent.sqlite3``, WAL mode, a full fsync per commit;
- PostgreSQL: ``postgresql://user@host:5432/db`` (``ASSISTANT_AGENT_LOG_URL``).

Table ``<prefix>agent_decisions``: ``seq`` (order), ``at`` (UTC ISO time), ``project``, ``key``,
``action``, ``status``, ``attempt`` (1 for the first try), ``decision`` (JSON: reason, params,
what it saw) and ``outcome`` (JSON). Rows are never updated or deleted.

Example:
    >>> log = open_decision_log(None, home=Path("/tmp/assistant"))             # doctest: +SKIP
    >>> log.append(decision, "pending")                                        # doctest: +SKIP
    >>> log.latest(decision.key).status                                        # doctest: +SKIP
    'pending'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from assistant.agent_policy import Decision
from errors import AssistantError
from state.sqlstore import SQLiteStore, SQLStore, open_store, redact_url

__all__ = [
    "AGENT_LOG_FILE",
    "UNFINISHED",
    "DecisionLog",
    "DecisionLogError",
    "Record",
    "RecordStatus",
    "open_decision_log",
]

logger = logging.getLogger(__name__)

RecordStatus = Literal["pending", "running", "done", "failed", "deferred"]
#: States the agent resumes after a restart.
UNFINISHED: Final = frozenset({"pending", "running"})
#: The decision log's SQLite file under ``Settings.home`` (unless ``ASSISTANT_AGENT_LOG_URL``).
AGENT_LOG_FILE: Final = "agent.sqlite3"
_STATUSES: Final = frozenset({"pending", "running", "done", "failed", "deferred"})
_SQLITE_BUSY_S = 10.0


class DecisionLogError(AssistantError):
    """The decision log cannot be opened or written (bad URL, unreachable database, bad prefix)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


def _schema(prefix: str, *, postgres: bool) -> list[str]:
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
    ]


_COLUMNS: Final = "seq, at, status, attempt, decision, outcome, project, key, action"


class DecisionLog:
    """The agent's append-only decision log (module docstring). Thread-safe.

    Use :func:`open_decision_log`.
    """

    def __init__(self, store: SQLStore, prefix: str, description: str) -> None:
        self._store = store
        self._table = f"{prefix}agent_decisions"
        self._p = store.placeholder
        self.description = description

    def close(self) -> None:
        """Close the connection."""
        self._store.close()

    # --- writing --------------------------------------------------------------------------------
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
        if status not in _STATUSES:
            raise ValueError(f"unknown decision status {status!r}; known: {', '.join(sorted(_STATUSES))}")
        when = at or _now()
        if attempt is None:
            latest = self.latest(decision.key)
            attempt = latest.attempt if latest is not None else 1
        doc = decision.to_json()
        body = json.dumps({k: doc[k] for k in ("reason", "params", "saw", "status")}, sort_keys=True)
        out = json.dumps(outcome or {}, sort_keys=True, default=str)
        p = self._p
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self._table} (at, project, key, action, status, attempt, decision, outcome) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) RETURNING seq",
                (when.isoformat(), decision.project, decision.key, decision.action, status, attempt, body, out),
            )
            seq = int(cur.fetchone()[0])
        logger.info("decision %s: %s (%s)", decision.key, status, decision.reason if status == "pending" else out[:200])
        return Record(seq, when, status, attempt, decision, json.loads(out))

    # --- reading --------------------------------------------------------------------------------
    def _select(self, where: str, args: Sequence[Any], tail: str = "") -> list[Record]:
        with self._store.cursor() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM {self._table} WHERE {where} {tail}", tuple(args))
            rows = cur.fetchall()
        return [_record(row) for row in rows]

    def latest(self, key: str) -> Record | None:
        """The latest row of a key, or None when the key was never logged."""
        p = self._p
        found = self._select(f"key = {p}", (key,), "ORDER BY seq DESC LIMIT 1")
        return found[0] if found else None

    def records(
        self, project: int | None = None, *, since: int = 0, limit: int | None = None, newest: bool = False
    ) -> list[Record]:
        """Rows in log order (or the newest ``limit`` ones, still in log order, with ``newest``)."""
        p = self._p
        where, args = f"seq > {p}", [since]
        if project is not None:
            where += f" AND project = {p}"
            args.append(project)
        order = "ORDER BY seq DESC" if newest else "ORDER BY seq"
        tail = order + (f" LIMIT {int(limit)}" if limit is not None else "")
        rows = self._select(where, args, tail)
        return rows[::-1] if newest else rows

    def states(self, project: int | None = None) -> list[Record]:
        """The latest row of every key, in the order the keys first appeared."""
        latest: dict[str, Record] = {}
        for record in self.records(project):
            latest[record.key] = record
        return list(latest.values())

    def unfinished(self, project: int) -> list[Record]:
        """Decisions left ``pending`` or ``running`` (by a killed agent), oldest first."""
        return [r for r in self.states(project) if r.status in UNFINISHED]

    def last(self, project: int, actions: Sequence[str], status: RecordStatus = "done") -> Record | None:
        """The latest row of one of ``actions`` in ``status``."""
        p = self._p
        marks = ", ".join([p] * len(actions))
        found = self._select(
            f"project = {p} AND status = {p} AND action IN ({marks})",
            (project, status, *actions),
            "ORDER BY seq DESC LIMIT 1",
        )
        return found[0] if found else None

    def done_since(self, project: int, since: dt.datetime, actions: Sequence[str]) -> list[Record]:
        """Rows ``done`` at or after ``since`` for ``actions`` (the day's budget)."""
        p = self._p
        marks = ", ".join([p] * len(actions))
        rows = self._select(
            f"project = {p} AND status = 'done' AND action IN ({marks}) AND at >= {p}",
            (project, *actions, since.isoformat()),
            "ORDER BY seq",
        )
        return rows


def _record(row: Sequence[Any]) -> Record:
    seq, at, status, attempt, decision, outcome, project, key, action = row
    body = json.loads(decision)
    parsed = Decision.from_json({**body, "project": project, "key": key, "action": action})
    return Record(int(seq), dt.datetime.fromisoformat(at), status, int(attempt), parsed, json.loads(outcome))


def open_decision_log(url: str | None, *, home: Path | None = None, table_prefix: str = "assistant_") -> DecisionLog:
    """Open (and create if needed) the decision log.

    Args:
        url: ``None`` or ``""`` for SQLite under ``home``; ``sqlite:////absolute/path.db``;
            ``postgresql://...``.
        home: ``Settings.home``: where the default SQLite file lives.
        table_prefix: Prefix of the table name (lower-case letters, digits, ``_``).

    Raises:
        DecisionLogError: Unknown URL scheme, no ``home`` for the default, a bad prefix, or the
            database cannot be opened.
    """
    store = open_store(
        url,
        home=home,
        file=AGENT_LOG_FILE,
        schema=lambda postgres: _schema(table_prefix, postgres=postgres),
        table_prefix=table_prefix,
        error=DecisionLogError,
        what="decision log",
        url_setting="ASSISTANT_AGENT_LOG_URL",
        busy_s=_SQLITE_BUSY_S,
    )
    where = f"sqlite {store.path}" if isinstance(store, SQLiteStore) else f"postgresql {redact_url(url or '')}"
    return DecisionLog(store, table_prefix, where)
