"""The dashboard's reader of the decision log: pages, latest state per key, and audit rows the agent can read."""

from __future__ import annotations

from assistant.agent_policy import Decision
from dashboard.decisions import open_decision_rows
from state.decision_log import open_decision_log


def _decision(i: int, action: str = "select") -> Decision:
    return Decision(action, 3, f"{action}:p3:{i}", f"reason {i}", {"k": i}, {"queue": i})  # type: ignore[arg-type]


def test_pages_show_each_decision_in_its_latest_state_newest_first(tmp_path):
    log = open_decision_log(None, home=tmp_path)
    for i in range(7):
        log.append(_decision(i), "pending")
        log.append(_decision(i), "done", {"chosen": i})
    log.append(_decision(99, "train"), "pending")
    log.append(Decision("train", 4, "train:p4:1", "other project"), "pending")
    rows = open_decision_rows(None, home=tmp_path)
    first = rows.page(3, limit=3)
    assert [r.key for r in first.rows] == ["train:p3:99", "select:p3:6", "select:p3:5"]
    assert [r.status for r in first.rows] == ["pending", "done", "done"]
    assert first.rows[1].outcome == {"chosen": 6} and first.rows[1].saw == {"queue": 6}
    second = rows.page(3, before=first.next_before, limit=3)
    assert [r.key for r in second.rows] == ["select:p3:4", "select:p3:3", "select:p3:2"]
    rest = rows.page(3, before=second.next_before, limit=3)
    assert [r.key for r in rest.rows] == ["select:p3:1", "select:p3:0"] and rest.next_before is None
    assert [r.key for r in rows.page(3, action="train").rows] == ["train:p3:99"]
    assert [r.key for r in rows.unfinished(3)] == ["train:p3:99"]
    assert rows.projects() == [3, 4]
    log.close()
    rows.close()


def test_an_audit_row_is_read_back_by_the_agents_own_log(tmp_path):
    rows = open_decision_rows(None, home=tmp_path)  # before the agent ever ran: the table is created
    written = rows.audit(3, "promote", who="lead", version="mkt-p3-r0002", previous="mkt-p3-r0001")
    rows.audit(3, "rollback", who="lead", version="mkt-p3-r0001", previous="mkt-p3-r0002")
    log = open_decision_log(None, home=tmp_path)
    states = log.states(3)
    assert [r.decision.action for r in states] == ["promote", "rollback"]
    assert states[0].status == "done" and states[0].decision.saw == {"by": "lead", "via": "dashboard"}
    assert states[0].decision.reason == "lead promoted mkt-p3-r0002 (was mkt-p3-r0001) from the dashboard"
    assert written.seq == states[0].seq
    assert log.unfinished(3) == []
    page = rows.page(3, action="rollback")
    assert page.rows[0].outcome == {"by": "lead", "previous": "mkt-p3-r0002", "version": "mkt-p3-r0001"}
    log.close()
    rows.close()
