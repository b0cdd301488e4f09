"""One SQL store for SQLite and PostgreSQL: a connection, a lock and one transaction per ``cursor()``.

The project's durable records all live in such a store: the corrections ledger and the effort
ledger beside it (:mod:`state.ledger`, :mod:`state.effort`, one database), and the agent's
decision log (``state.decision_log``, a database of its own). Each brings its ``CREATE ... IF NOT EXISTS``
statements; the store runs them when it opens and hands out locked cursors, each a transaction
that commits on success and rolls back on an exception.

- SQLite: one connection shared by the process's threads (serialised by a lock), WAL mode, a full
  fsync per commit (a row acknowledged to Label Studio or written before an action survives a
  crash of the machine), ``BEGIN IMMEDIATE`` so that a transaction takes the write lock at once
  instead of failing half-way on a busy database;
- PostgreSQL (``psycopg``, loaded only then): one connection per store, reconnected after the
  server went away.

Light on purpose (stdlib, ``psycopg`` on demand): the web process, the workers, the agent and the
CLI all import it.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from errors import AssistantError
from state.redact import redact_url

__all__ = ["PostgresStore", "SQLStore", "SQLiteStore", "open_store"]

_PG_CONNECT_TIMEOUT_S = 3
_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

#: ``schema(postgres) -> statements``: the tables and indexes a store creates when it opens.
Schema = Callable[[bool], Sequence[str]]
#: The error class a store raises when it cannot open (the caller's own, under the one base).
ErrorOf = type[AssistantError]


class SQLStore(Protocol):
    """What a record keeper needs of its database: locked cursors with the dialect's placeholders."""

    placeholder: str
    postgres: bool
    description: str

    def cursor(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor inside one transaction (committed on success, rolled back on an exception)."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


class SQLiteStore:
    """:class:`SQLStore` on a SQLite file.

    Args:
        path: The database file (its folder is created).
        schema: Its tables.
        busy_s: Seconds to wait for another process's write lock before failing.
        error: The error class raised when the file cannot be opened.
        what: What the file holds, for that error ("the SQLite ledger").
    """

    placeholder = "?"
    postgres = False

    def __init__(self, path: Path, schema: Schema, *, busy_s: float, error: ErrorOf, what: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode (isolation_level=None): cursor() opens and ends each transaction.
            self._conn = sqlite3.connect(path, timeout=busy_s, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in schema(False):
                self._conn.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise error(f"cannot open {what} at {path}", why=str(exc), fix="check the path's permissions") from exc
        self._lock = threading.Lock()
        self.path = path
        self.description = f"sqlite:{path}"

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """See :meth:`SQLStore.cursor`."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def close(self) -> None:
        """See :meth:`SQLStore.close`."""
        with self._lock:
            self._conn.close()


class PostgresStore:
    """:class:`SQLStore` on PostgreSQL.

    Args:
        url: ``postgresql://user@host:5432/db``.
        schema: Its tables.
        error: The error class raised when the server cannot be reached.
        what: What the database holds, for that error ("the PostgreSQL ledger").
    """

    placeholder = "%s"
    postgres = True

    def __init__(self, url: str, schema: Schema, *, error: ErrorOf, what: str) -> None:
        import psycopg  # imported here: SQLite-only deployments never load it

        self._psycopg = psycopg
        self._url = url
        self._error, self._what = error, what
        self._lock = threading.Lock()
        self._conn: Any = None
        self.description = "postgresql"
        with self.cursor() as cur:
            for statement in schema(True):
                cur.execute(statement)

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, connect_timeout=_PG_CONNECT_TIMEOUT_S)
        except self._psycopg.Error as exc:
            raise self._error(
                f"cannot connect to {self._what} ({redact_url(self._url)})",
                why=str(exc).strip(),
                fix="start the database server or correct the URL",
            ) from exc

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """See :meth:`SQLStore.cursor`."""
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except self._psycopg.OperationalError:
                # The server went away: drop the connection so that the next call reconnects.
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        """See :meth:`SQLStore.close`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_store(
    url: str | None,
    *,
    home: Path | None,
    file: str,
    schema: Schema,
    table_prefix: str,
    error: ErrorOf,
    what: str,
    url_setting: str,
    busy_s: float = 5.0,
) -> SQLStore:
    """Open (and create if needed) a store from a URL.

    Args:
        url: ``None`` or ``""`` for SQLite at ``home / file``; ``sqlite:///relative.db``,
            ``sqlite:////absolute/path.db``; ``postgresql://...`` (or ``postgres://...``).
        home: ``Settings.home``: where the default SQLite file lives.
        file: The default SQLite file's name.
        schema: The tables.
        table_prefix: The table-name prefix (checked: lower-case letters, digits, ``_``).
        error: The caller's error class.
        what: What the store holds ("ledger", "decision-log"), for messages.
        url_setting: The setting that names the URL (``ASSISTANT_LEDGER_URL``), for messages.
        busy_s: SQLite's wait for another process's write lock.

    Raises:
        AssistantError: ``error(...)``: unknown scheme, no ``home`` for the default, a bad prefix, or
            the database cannot be opened.
    """
    if not _PREFIX_RE.match(table_prefix):
        raise error(f"invalid {what} table prefix {table_prefix!r}", fix="use lower-case letters, digits and _")
    if not url:
        if home is None:
            raise error(f"no {what} URL and no home directory", fix=f"set {url_setting} or ASSISTANT_HOME")
        return SQLiteStore(Path(home) / file, schema, busy_s=busy_s, error=error, what=f"the SQLite {what}")
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return SQLiteStore(path, schema, busy_s=busy_s, error=error, what=f"the SQLite {what}")
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        return PostgresStore(dsn, schema, error=error, what=f"the PostgreSQL {what}")
    raise error(
        f"unsupported {what} URL {redact_url(url)!r}",
        fix="use sqlite:////absolute/path.db or postgresql://user@host:5432/database",
    )
