"""The dashboard's reader of the decision log: pages, latest state per key, and audit rows the agent can read.

On both stores the log runs on: SQLite in tmp, and the local PostgreSQL under a table prefix of the
test's own (dropped afterwards; skipped with the reason when the server cannot be reached).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.decision_log import DecisionLog, open_decision_log
from assistant.agent_policy import Decision
from state.decision_log import DecisionRows, open_decision_rows
from tests.sql import PG_URL, drop_pg_tables, pg_unreachable


@contextlib.contextmanager
def _logs(kind: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """``(open the agent's log, open the dashboard's reader)`` on one store; both close afterwards."""
    opened: list[DecisionLog | DecisionRows] = []
    if kind == "sqlite":
        url, prefix = None, "assistant_"
    else:
        reason = pg_unreachable()
        if reason:
            pytest.skip(reason)
        url, prefix = PG_URL, f"t{uuid.uuid4().hex[:10]}_"

    def agent_log() -> DecisionLog:
        opened.append(open_decision_log(url, home=tmp_path, table_prefix=prefix))
        return opened[-1]  # type: ignore[return-value]

    def rows() -> DecisionRows:
        opened.append(open_decision_rows(url, home=tmp_path, table_prefix=prefix))
        return opened[-1]  # type: ignore[return-value]

    try:
        yield agent_log, rows
    finally:
        for store in opened:
            store.close()
        if url is not None:
            drop_pg_tables(prefix)


def _decision(i: int, action: str = "select") -> Decision:
    return Decision(action, 3, f"{action}:p3:{i}", f"reason {i}", {"k": i}, {"queue": i})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_pages_show_each_decision_in_its_latest_state_newest_first(kind: str, tmp_path: Path):
    with _logs(kind, tmp_path) as (agent_log, reader):
        log = agent_log()
        for i in range(7):
            log.append(_decision(i), "pending")
            log.append(_decision(i), "done", {"chosen": i})
        log.append(_decision(99, "train"), "pending")
        log.append(Decision("train", 4, "train:p4:1", "other project"), "pending")
        rows = reader()
        first = rows.page(3, limit=3)
        assert [r.key for r in first.rows] == ["train:p3:99", "select:p3:6", "select:p3:5"]
        assert [r.status for r in first.rows] == ["pending", "done", "done"]
        assert first.rows[1].outcome == {"chosen": 6} and first.rows[1].saw == {"queue": 6}
        second = rows.page(3, before=first.next_before, limit=3)
        assert [r.key for r in second.rows] == ["select:p3:4", "select:p3:3", "select:p3:2"]
        rest = rows.page(3, before=second.next_before, limit=3)
        assert [r.key for r in rest.rows] == ["select:p3:1", "select:p3:0"] and rest.next_before is None
        assert [r.key for r in rows.page(3, action="train").rows] == ["train:p3:99"]
        assert [r.key for r in rows.recent_unfinished(3)] == ["train:p3:99"]
        assert rows.projects() == [3, 4] and rows.has(4) and not rows.has(5)
        assert rows.latest(3, statuses=("done",), actions=("select",)).key == "select:p3:6"  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_audit_row_is_read_back_by_the_agents_own_log(kind: str, tmp_path: Path):
    with _logs(kind, tmp_path) as (agent_log, reader):
        rows = reader()  # before the agent ever ran: the table is created
        written = rows.audit(3, "promote", who="lead", version="mkt-p3-r0002", previous="mkt-p3-r0001")
        rows.audit(3, "rollback", who="lead", version="mkt-p3-r0001", previous="mkt-p3-r0002")
        log = agent_log()
        states = log.states(3)
        assert [r.decision.action for r in states] == ["promote", "rollback"]
        assert states[0].status == "done" and states[0].decision.saw == {"by": "lead", "via": "dashboard"}
        assert states[0].decision.reason == "lead promoted mkt-p3-r0002 (was mkt-p3-r0001) from the dashboard"
        assert written.seq == states[0].seq
        assert log.unfinished(3) == []
        page = rows.page(3, action="rollback")
        assert page.rows[0].outcome == {"by": "lead", "previous": "mkt-p3-r0002", "version": "mkt-p3-r0001"}
