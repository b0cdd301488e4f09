"""The two databases the durable records run on in tests: SQLite in tmp, and the local PostgreSQL.

``ledger_on(kind, tmp_path)`` opens a corrections ledger (with the effort ledger's tables) on one of
them; on PostgreSQL under a fresh table prefix whose tables are all dropped afterwards, skipping
with the reason when the server cannot be reached.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from state.ledger import Ledger, open_ledger

__all__ = ["PG_URL", "drop_pg_tables", "ledger_on", "pg_unreachable"]

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_unreachable() -> str | None:
    """Why the test PostgreSQL cannot be used, or None when it answers."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "skip", with the reason
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    return None


def drop_pg_tables(prefix: str) -> None:
    """Drop every table whose name starts with ``prefix`` (a test's own)."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (f"{prefix}%",)).fetchall()
        for (table,) in rows:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@contextlib.contextmanager
def ledger_on(kind: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger on ``sqlite`` (under ``tmp_path``) or ``postgres`` (own prefix, dropped afterwards)."""
    if kind == "sqlite":
        opened = open_ledger(None, home=tmp_path)
        try:
            yield opened
        finally:
            opened.close()
        return
    reason = pg_unreachable()
    if reason:
        pytest.skip(reason)
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    opened = open_ledger(PG_URL, table_prefix=prefix)
    try:
        yield opened
    finally:
        opened.close()
        drop_pg_tables(prefix)
