"""The corrections ledger: an append-only log of annotation events, per project, with round watermarks.

The HTTP backend appends one row per annotation event its ``/webhook`` receives
(``ANNOTATION_CREATED``, ``ANNOTATIONS_CREATED``, ``ANNOTATION_UPDATED``, ``ANNOTATIONS_DELETED``
and the singular alias); the fine-tuning rounds on the worker side read it to decide when a round
is due and which annotations changed since the last one. Label Studio stays the source of truth
(its webhooks are fire-and-forget, one try, 1 s timeout, so a row may be missing): a round re-reads
the annotations themselves through the SDK and uses the ledger only as a cheap change feed.

Light on purpose (stdlib, ``sqlite3`` and ``psycopg`` only, through :mod:`state.sqlstore`): both
the web process and the workers import it. Two stores behind one API:

- SQLite (default): ``<Settings.home>/ledger.sqlite3``, WAL mode, a full fsync per commit;
- PostgreSQL: ``postgresql://user@host:5432/db`` (``ASSISTANT_LEDGER_URL``).

Tables (``<prefix>`` defaults to ``assistant_``)::

    <prefix>corrections  seq (watermark), event_id (unique: a re-sent event is stored once),
                         action, project, task, annotation_id, result (JSON), parent_prediction,
                         completed_by, was_cancelled, created_at (the revision's time in LS),
                         received_at (ours)
    <prefix>rounds       seq, project, round_id (unique per project), watermark, recorded_at

The effort ledger's tables live in the same database (:mod:`state.effort`, created here too):
:attr:`Ledger.effort` reads and writes them over the same connection.

Rows are never updated or deleted through this API: an edit is a new ``ANNOTATION_UPDATED`` row,
a deletion a new ``ANNOTATIONS_DELETED`` row (:meth:`Ledger.current_annotations` folds them).

Example:
    >>> ledger = open_ledger(None, home=Path("/tmp/assistant"))               # doctest: +SKIP
    >>> ledger.append([LedgerEvent.annotation("ANNOTATION_CREATED", project=3, annotation_id=55,
    ...                                        task=12, result=[...])])       # doctest: +SKIP
    1
    >>> ledger.count_since_last_round(3)                                      # doctest: +SKIP
    1
    >>> ledger.record_round(3, "round-1", ledger.watermark(3))                # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from errors import AssistantError
from state.effort import EffortStore, effort_schema
from state.sqlstore import SQLStore, open_store

__all__ = [
    "DELETE_ACTIONS",
    "LEDGER_FILE",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerEvent",
    "RoundMark",
    "open_ledger",
]

logger = logging.getLogger(__name__)

LEDGER_FILE: Final = "ledger.sqlite3"
# Label Studio sends the plural; label-studio-ml listens for the singular. Both mean "deleted".
DELETE_ACTIONS: Final = frozenset({"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"})
# Seconds SQLite waits for another process's write lock before failing (the webhook answers in
# well under LS's 1 s; a wait this long only happens when a round holds a long read).
_SQLITE_BUSY_S = 5.0


class LedgerError(AssistantError):
    """The ledger cannot be opened or written (bad URL, unreachable database, bad prefix)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class LedgerEvent:
    """One annotation event to append.

    Attributes:
        event_id: Unique id of the event; appending the same id twice stores it once. Label Studio
            sends none, so :meth:`annotation` derives it from the content.
        action: The webhook action (``ANNOTATION_CREATED``, ``ANNOTATIONS_DELETED``, ...).
        project: Label Studio project id.
        task: Task id (absent on deletions, which carry annotation ids only).
        annotation_id: Annotation id.
        result: The annotation's result items as Label Studio sent them (None on deletions).
        parent_prediction: The prediction the annotator started from, when there was one.
        completed_by: The annotator's user id.
        was_cancelled: The annotator skipped the task.
        created_at: When this revision was made in Label Studio (its ``updated_at``/``created_at``).
    """

    event_id: str
    action: str
    project: int
    task: int | None = None
    annotation_id: int | None = None
    result: list[dict[str, Any]] | None = None
    parent_prediction: int | None = None
    completed_by: int | None = None
    was_cancelled: bool = False
    created_at: str | None = None

    @classmethod
    def annotation(
        cls,
        action: str,
        *,
        project: int,
        annotation_id: int | None,
        task: int | None = None,
        result: list[dict[str, Any]] | None = None,
        parent_prediction: int | None = None,
        completed_by: int | None = None,
        was_cancelled: bool = False,
        created_at: str | None = None,
    ) -> LedgerEvent:
        """An event whose id is a digest of its content (a re-sent webhook dedupes, an edit does not)."""
        body = json.dumps(
            [action, project, task, annotation_id, result, parent_prediction, was_cancelled, created_at],
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
        return cls(
            event_id=f"{action.lower()}:{annotation_id}:{digest}",
            action=action,
            project=project,
            task=task,
            annotation_id=annotation_id,
            result=result,
            parent_prediction=parent_prediction,
            completed_by=completed_by,
            was_cancelled=was_cancelled,
            created_at=created_at,
        )


@dataclass(frozen=True)
class LedgerEntry:
    """A stored row: the event plus its position (``seq``, the watermark) and arrival time."""

    seq: int
    event: LedgerEvent
    received_at: str

    @property
    def deleted(self) -> bool:
        """Whether the row records a deletion."""
        return self.event.action in DELETE_ACTIONS


@dataclass(frozen=True)
class RoundMark:
    """A fine-tuning round's watermark: the rows up to ``watermark`` were available to it."""

    project: int
    round_id: str
    watermark: int
    recorded_at: str


# --- the tables ---------------------------------------------------------------------------------
_COLUMNS: Final = (
    "event_id, action, project, task, annotation_id, result, parent_prediction, completed_by, "
    "was_cancelled, created_at, received_at"
)


def _schema(prefix: str, *, postgres: bool) -> list[str]:
    seq = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
    big = "BIGINT" if postgres else "INTEGER"
    result = "JSONB" if postgres else "TEXT"
    flag = "BOOLEAN NOT NULL DEFAULT FALSE" if postgres else "INTEGER NOT NULL DEFAULT 0"
    return [
        f"""CREATE TABLE IF NOT EXISTS {prefix}corrections (
            seq {seq},
            event_id TEXT NOT NULL UNIQUE,
            action TEXT NOT NULL,
            project {big} NOT NULL,
            task {big},
            annotation_id {big},
            result {result},
            parent_prediction {big},
            completed_by {big},
            was_cancelled {flag},
            created_at TEXT,
            received_at TEXT NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {prefix}corrections_project_seq ON {prefix}corrections (project, seq)",
        f"""CREATE TABLE IF NOT EXISTS {prefix}rounds (
            seq {seq},
            project {big} NOT NULL,
            round_id TEXT NOT NULL,
            watermark {big} NOT NULL,
            recorded_at TEXT NOT NULL,
            UNIQUE (project, round_id))""",
        # The effort ledger lives beside the corrections, in the same database (state.effort).
        *effort_schema(prefix, postgres=postgres),
    ]


# --- the ledger ---------------------------------------------------------------------------------
class Ledger:
    """The append-only corrections ledger (see the module docstring). Thread-safe.

    Build it with :func:`open_ledger`.
    """

    def __init__(self, store: SQLStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self._postgres = store.postgres
        self._ph = store.placeholder
        self.effort = EffortStore(store, prefix)

    @property
    def description(self) -> str:
        """Where the ledger lives, without credentials (for logs and ``/health``)."""
        return self._store.description

    def close(self) -> None:
        """Close the connection."""
        self._store.close()

    # --- writing ----------------------------------------------------------------------------------
    def append(self, events: Sequence[LedgerEvent]) -> int:
        """Append events in one transaction; an ``event_id`` already stored is skipped.

        Returns:
            How many rows were added.
        """
        if not events:
            return 0
        p = self._ph
        cast = f"{p}::jsonb" if self._postgres else p
        values = ", ".join([p, p, p, p, p, cast, p, p, p, p, p])
        sql = f"INSERT INTO {self._prefix}corrections ({_COLUMNS}) VALUES ({values}) ON CONFLICT (event_id) DO NOTHING"
        received = _now()
        added = 0
        with self._store.cursor() as cur:
            for event in events:
                cur.execute(sql, self._row(event, received))
                added += max(cur.rowcount, 0)
        return added

    def _row(self, event: LedgerEvent, received: str) -> tuple[Any, ...]:
        return (
            event.event_id,
            event.action,
            event.project,
            event.task,
            event.annotation_id,
            None if event.result is None else json.dumps(event.result, ensure_ascii=False),
            event.parent_prediction,
            event.completed_by,
            bool(event.was_cancelled) if self._postgres else int(event.was_cancelled),
            event.created_at,
            received,
        )

    def record_round(self, project: int, round_id: str, watermark: int) -> RoundMark:
        """Record that round ``round_id`` consumed the project's rows up to ``watermark``.

        Idempotent per ``(project, round_id)``: the first record wins.
        """
        p = self._ph
        mark = RoundMark(project=project, round_id=round_id, watermark=int(watermark), recorded_at=_now())
        with self._store.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self._prefix}rounds (project, round_id, watermark, recorded_at) "
                f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (project, round_id) DO NOTHING",
                (mark.project, mark.round_id, mark.watermark, mark.recorded_at),
            )
            cur.execute(
                f"SELECT project, round_id, watermark, recorded_at FROM {self._prefix}rounds "
                f"WHERE project = {p} AND round_id = {p}",
                (project, round_id),
            )
            row = cur.fetchone()
        return RoundMark(int(row[0]), str(row[1]), int(row[2]), str(row[3]))

    # --- reading ----------------------------------------------------------------------------------
    def watermark(self, project: int) -> int:
        """The project's latest ``seq`` (0 when it has no rows): pass it to :meth:`record_round`."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT MAX(seq) FROM {self._prefix}corrections WHERE project = {self._ph}", (project,))
            row = cur.fetchone()
        return int(row[0] or 0)

    def count(self, project: int, since: int = 0) -> int:
        """Rows of ``project`` after watermark ``since``."""
        p = self._ph
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM {self._prefix}corrections WHERE project = {p} AND seq > {p}", (project, since)
            )
            row = cur.fetchone()
        return int(row[0])

    def entries(self, project: int, since: int = 0, limit: int | None = None) -> list[LedgerEntry]:
        """Rows of ``project`` after watermark ``since``, oldest first."""
        p = self._ph
        sql = f"SELECT seq, {_COLUMNS} FROM {self._prefix}corrections WHERE project = {p} AND seq > {p} ORDER BY seq"
        params: tuple[Any, ...] = (project, since)
        if limit is not None:
            sql += f" LIMIT {p}"
            params = (*params, int(limit))
        with self._store.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return [_entry(row) for row in rows]

    def projects(self) -> list[int]:
        """Every project with at least one row, ascending (the automatic rounds check each)."""
        with self._store.cursor() as cur:
            cur.execute(f"SELECT DISTINCT project FROM {self._prefix}corrections ORDER BY project")
            rows = cur.fetchall()
        return [int(row[0]) for row in rows]

    def last_round(self, project: int) -> RoundMark | None:
        """The project's most recent round mark, or None before its first round."""
        with self._store.cursor() as cur:
            cur.execute(
                f"SELECT project, round_id, watermark, recorded_at FROM {self._prefix}rounds "
                f"WHERE project = {self._ph} ORDER BY seq DESC LIMIT 1",
                (project,),
            )
            row = cur.fetchone()
        return None if row is None else RoundMark(int(row[0]), str(row[1]), int(row[2]), str(row[3]))

    def _since_last_round(self, project: int) -> int:
        mark = self.last_round(project)
        return 0 if mark is None else mark.watermark

    def count_since_last_round(self, project: int) -> int:
        """Rows of ``project`` that arrived after its last round's watermark (all before the first)."""
        return self.count(project, self._since_last_round(project))

    def entries_since_last_round(self, project: int, limit: int | None = None) -> list[LedgerEntry]:
        """Rows of ``project`` after its last round's watermark, oldest first."""
        return self.entries(project, self._since_last_round(project), limit)

    def current_annotations(self, project: int, since: int = 0) -> dict[int, LedgerEntry]:
        """The latest revision of each annotation touched after ``since``, deletions removed."""
        latest: dict[int, LedgerEntry] = {}
        for entry in self.entries(project, since):
            annotation = entry.event.annotation_id
            if annotation is None:
                continue
            if entry.deleted:
                latest.pop(annotation, None)
            else:
                latest[annotation] = entry
        return latest


def _entry(row: Sequence[Any]) -> LedgerEntry:
    seq, event_id, action, project, task, annotation_id, result, parent, completed_by, cancelled, created = row[:11]
    received = row[11]
    if isinstance(result, str):  # SQLite keeps TEXT; PostgreSQL's JSONB arrives parsed
        result = json.loads(result)
    event = LedgerEvent(
        event_id=str(event_id),
        action=str(action),
        project=int(project),
        task=None if task is None else int(task),
        annotation_id=None if annotation_id is None else int(annotation_id),
        result=result,
        parent_prediction=None if parent is None else int(parent),
        completed_by=None if completed_by is None else int(completed_by),
        was_cancelled=bool(cancelled),
        created_at=created,
    )
    return LedgerEntry(seq=int(seq), event=event, received_at=str(received))


def open_ledger(url: str | None, *, home: Path | None = None, table_prefix: str = "assistant_") -> Ledger:
    """Open (and create if needed) the ledger, the effort ledger's tables included.

    Args:
        url: ``None`` or ``""`` for SQLite under ``home``; ``sqlite:///relative.db``,
            ``sqlite:////absolute/path.db``; ``postgresql://...`` (or ``postgres://...``).
        home: ``Settings.home``: where the default SQLite file lives.
        table_prefix: Prefix of the table names (lower-case letters, digits, ``_``).

    Raises:
        LedgerError: Unknown URL scheme, no ``home`` for the default, a bad prefix, or the
            database cannot be opened.
    """
    store = open_store(
        url,
        home=home,
        file=LEDGER_FILE,
        schema=lambda postgres: _schema(table_prefix, postgres=postgres),
        table_prefix=table_prefix,
        error=LedgerError,
        what="ledger",
        url_setting="ASSISTANT_LEDGER_URL",
        busy_s=_SQLITE_BUSY_S,
    )
    return Ledger(store, table_prefix)
