"""The decision log's store: every decision of the agent, what it saw, why, and how it ended. Append-only.

The one home of the log's table: its schema and indexes, appending a row, reading it back (by key,
in log order, in keyset pages) and the audit rows the dashboard writes. It stores plain strings and
JSON and imports nothing of the policy core, so the web tier (``dashboard``) reads it as the agent
does; the agent's typed view (rows as :class:`~assistant.agent_policy.Decision` records, its
action names validated) is :mod:`agent.decision_log`, built on this store.

Each change of a decision's state is a new row; the latest row of a key is its state::

    pending   decided and persisted, nothing done yet
    running   side effects started (a round queued: its Celery task id is in the outcome)
    done      finished; the outcome says what happened
    failed    finished without success; retried later under the same key (PolicyConfig.max_attempts)
    deferred  the policy wanted it, a limit forbids it now (a budget, an interval); never executed

Two stores behind one API (``state.sqlstore``: stdlib ``sqlite3``, ``psycopg`` only for PostgreSQL):

- SQLite (default): ``<Settings.home>/agent.sqlite3``, WAL mode, a full fsync per commit;
- PostgreSQL: ``postgresql://user@host:5432/db`` (``ASSISTANT_AGENT_LOG_URL``).

Table ``<prefix>agent_decisions``: ``seq`` (order), ``at`` (UTC ISO time), ``project``, ``key``,
``action``, ``status``, ``attempt`` (1 for the first try), ``decision`` (JSON: reason, params,
what it saw, the decision's own status) and ``outcome`` (JSON). Rows are never updated or deleted.
Reads are keyset reads (``seq < before``) on the ``(project, seq)``, ``(key, seq)`` and
``(project, action, seq)`` indexes, so a page costs the same on 100 or 100,000 decisions.

Example:
    >>> rows = open_decision_rows(None, home=Path("/tmp/assistant"))           # doctest: +SKIP
    >>> rows.append(3, "train:p3:1", "train", "pending", reason="200 new labels").status  # doctest: +SKIP
    'pending'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from errors import AssistantError
from state.redact import redact_url
from state.sqlstore import SQLiteStore, SQLStore, open_store

__all__ = [
    "AGENT_LOG_FILE",
    "AUDIT_ACTIONS",
    "DECISION_ACTIONS",
    "UNFINISHED",
    "DecisionLogError",
    "DecisionPage",
    "DecisionRow",
    "DecisionRows",
    "RecordStatus",
    "open_decision_rows",
]

logger = logging.getLogger(__name__)

RecordStatus = Literal["pending", "running", "done", "failed", "deferred"]
#: States the agent resumes after a restart.
UNFINISHED: Final = frozenset({"pending", "running"})
#: The decision log's SQLite file under ``Settings.home`` (unless ``ASSISTANT_AGENT_LOG_URL``).
AGENT_LOG_FILE: Final = "agent.sqlite3"
#: Actions the dashboard writes (people acting on the registry), next to the agent's own.
AUDIT_ACTIONS: Final = ("promote", "rollback")
#: Every action the log holds, in the policy's execution order, then the audit actions: the one
#: list the store checks and the dashboard filters by. The policy core (``assistant.agent_policy``)
#: imports nothing of ``state/``, so its ``Action`` type names them again; ``tests/agent`` keeps
#: the two equal.
DECISION_ACTIONS: Final = ("guard", "preannotate", "rescore", "repredict", "review", "train", "select", *AUDIT_ACTIONS)
_STATUSES: Final = frozenset({"pending", "running", "done", "failed", "deferred"})
_SQLITE_BUSY_S = 10.0


class DecisionLogError(AssistantError):
    """The decision log cannot be opened or written (bad URL, unreachable database, bad prefix)."""


@dataclass(frozen=True)
class DecisionRow:
    """One row of the log: a decision in one state.

    Attributes:
        seq: Position of the row in the log.
        at: When the row was written (ISO, UTC).
        project: The project.
        key: The decision's key.
        action: What (``train``, ``select``, ..., or ``promote``/``rollback`` from the dashboard).
        status: ``pending``, ``running``, ``done``, ``failed`` or ``deferred``.
        attempt: Which try (1 for the first).
        reason: Why, for people.
        params: What the executor needed.
        saw: What the policy looked at.
        outcome: What happened (JSON-ready; empty while pending).
        decided: The decision's own status (``decided``, or ``deferred`` when a limit held it back).
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
    decided: str = "decided"


@dataclass(frozen=True)
class DecisionPage:
    """One page, newest first; ``next_before`` is the cursor of the next (older) page, None at the end."""

    rows: list[DecisionRow]
    next_before: int | None


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
        f"CREATE INDEX IF NOT EXISTS {table}_project_action_seq ON {table} (project, action, seq)",
    ]


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
        decided=str(body.get("status", "decided")),
    )


class DecisionRows:
    """The append-only decision log's rows (module docstring). Thread-safe. Use :func:`open_decision_rows`."""

    def __init__(self, store: SQLStore, prefix: str, description: str = "") -> None:
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
        project: int,
        key: str,
        action: str,
        status: str,
        *,
        reason: str,
        params: Mapping[str, Any] | None = None,
        saw: Mapping[str, Any] | None = None,
        decided: str = "decided",
        outcome: Mapping[str, Any] | None = None,
        attempt: int | None = None,
        at: dt.datetime | None = None,
    ) -> DecisionRow:
        """Write one row: the decision ``key`` is now in ``status``.

        Args:
            project: The project.
            key: The decision's key (idempotency: one key, one decision).
            action: What was decided.
            status: Its new state (``RecordStatus``).
            reason: Why, for people.
            params: What the executor needs (JSON-ready).
            saw: What the policy looked at (JSON-ready).
            decided: The decision's own status (``decided`` or ``deferred``).
            outcome: What happened (JSON-ready).
            attempt: Which try; default: the key's latest row's attempt (1 for a new key).
            at: The time (default: now, UTC).

        Raises:
            ValueError: An unknown action or status, or params/saw/outcome that are not JSON.
        """
        if action not in DECISION_ACTIONS:
            raise ValueError(f"unknown decision action {action!r}; known: {', '.join(DECISION_ACTIONS)}")
        if status not in _STATUSES:
            raise ValueError(f"unknown decision status {status!r}; known: {', '.join(sorted(_STATUSES))}")
        when = at or dt.datetime.now(dt.UTC)
        if attempt is None:
            latest = self.latest_of(key)
            attempt = latest.attempt if latest is not None else 1
        body = {"reason": reason, "params": dict(params or {}), "saw": dict(saw or {}), "status": decided}
        text = json.dumps(body, sort_keys=True)
        out = json.dumps(dict(outcome or {}), sort_keys=True, default=str)
        p = self._p
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self._table} (at, project, key, action, status, attempt, decision, outcome) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) RETURNING seq",
                (when.isoformat(), project, key, action, status, attempt, text, out),
            )
            seq = int(cur.fetchone()[0])
        logger.info("decision %s: %s (%s)", key, status, reason if status == "pending" else out[:200])
        return _row((seq, when.isoformat(), project, key, action, status, attempt, text, out))

    def audit(
        self, project: int, action: Literal["promote", "rollback"], *, who: str, version: str, previous: str
    ) -> DecisionRow:
        """Write that ``who`` moved the project's model from ``previous`` to ``version`` (status ``done``).

        The dashboard's row for a promotion or rollback a person made; the agent reads it like its own.
        """
        when = dt.datetime.now(dt.UTC)
        verb = "promoted" if action == "promote" else "rolled back to"
        return self.append(
            project,
            f"{action}:p{project}:{version}:{when.strftime('%Y%m%dT%H%M%S.%f')}",
            action,
            "done",
            reason=f"{who} {verb} {version} (was {previous}) from the dashboard",
            params={"version": version, "previous": previous},
            saw={"by": who, "via": "dashboard"},
            outcome={"version": version, "previous": previous, "by": who},
            attempt=1,
            at=when,
        )

    # --- reading --------------------------------------------------------------------------------
    def _select(self, where: str, args: Sequence[Any], tail: str = "") -> list[DecisionRow]:
        with self._store.cursor() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM {self._table} a WHERE {where} {tail}", tuple(args))
            rows = cur.fetchall()
        return [_row(row) for row in rows]

    def latest_of(self, key: str) -> DecisionRow | None:
        """The latest row of a key, or None when the key was never logged."""
        found = self._select(f"key = {self._p}", (key,), "ORDER BY seq DESC LIMIT 1")
        return found[0] if found else None

    def rows(
        self, project: int | None = None, *, since: int = 0, limit: int | None = None, newest: bool = False
    ) -> list[DecisionRow]:
        """Rows in log order (or the newest ``limit`` ones, still in log order, with ``newest``)."""
        p = self._p
        where, args = f"seq > {p}", [since]
        if project is not None:
            where += f" AND project = {p}"
            args.append(project)
        order = "ORDER BY seq DESC" if newest else "ORDER BY seq"
        tail = order + (f" LIMIT {int(limit)}" if limit is not None else "")
        found = self._select(where, args, tail)
        return found[::-1] if newest else found

    def states(self, project: int | None = None) -> list[DecisionRow]:
        """The latest row of every key, in the order the keys first appeared."""
        latest: dict[str, DecisionRow] = {}
        for row in self.rows(project):
            latest[row.key] = row
        return list(latest.values())

    def _filter(
        self, project: int, statuses: Sequence[str], actions: Sequence[str], alias: str = ""
    ) -> tuple[list[str], list[Any]]:
        # The project's rows in one of ``statuses`` and of ``actions`` (each only when given).
        p = self._p
        where: list[str] = [f"{alias}project = {p}"]
        args: list[Any] = [project]
        for column, values in (("status", statuses), ("action", actions)):
            if values:
                where.append(f"{alias}{column} IN ({', '.join([p] * len(values))})")
                args.extend(values)
        return where, args

    def latest(self, project: int, *, statuses: Sequence[str] = (), actions: Sequence[str] = ()) -> DecisionRow | None:
        """The newest row of the project (in one of ``statuses`` and of ``actions`` when given)."""
        where, args = self._filter(project, statuses, actions)
        found = self._select(" AND ".join(where), args, "ORDER BY seq DESC LIMIT 1")
        return found[0] if found else None

    def done_since(self, project: int, since: dt.datetime, actions: Sequence[str]) -> list[DecisionRow]:
        """Rows ``done`` at or after ``since`` for ``actions`` (the day's budget; all when empty), in log order."""
        where, args = self._filter(project, ("done",), actions)
        where.append(f"at >= {self._p}")
        return self._select(" AND ".join(where), [*args, since.isoformat()], "ORDER BY seq")

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
        where, args = self._filter(project, (status,) if status else (), (action,) if action else (), "a.")
        if before is not None:
            where.append(f"a.seq < {p}")
            args.append(before)
        # The latest row of its key: no newer row with the same key (the key index answers it).
        where.append(f"NOT EXISTS (SELECT 1 FROM {t} b WHERE b.key = a.key AND b.seq > a.seq)")
        found = self._select(" AND ".join(where), args, f"ORDER BY a.seq DESC LIMIT {int(limit) + 1}")
        more = len(found) > limit
        rows = found[:limit]
        return DecisionPage(rows, rows[-1].seq if more and rows else None)

    def recent_unfinished(self, project: int, *, limit: int = 5, window: int = 500) -> list[DecisionRow]:
        """Decisions whose latest state is ``pending`` or ``running`` (what the agent is doing), newest first.

        Only the newest ``window`` rows are read: the agent finishes what it starts before it decides
        more (a round it follows writes nothing meanwhile), so what is open sits at the end of the log,
        and the dashboard's Now page stays one indexed read on a log of any length. The agent's own
        resume reads every key (:meth:`states`).
        """
        rows = self._select(f"project = {self._p}", (project,), f"ORDER BY seq DESC LIMIT {int(window)}")
        latest: dict[str, DecisionRow] = {}
        for row in rows:  # newest first: the first row of a key is its state
            latest.setdefault(row.key, row)
        return [r for r in latest.values() if r.status in UNFINISHED][:limit]

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


def open_decision_rows(url: str | None, *, home: Path | None = None, table_prefix: str = "assistant_") -> DecisionRows:
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
    return DecisionRows(store, table_prefix, where)
