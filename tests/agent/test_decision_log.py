"""The decision log on SQLite and PostgreSQL: append-only rows, latest state per key, unfinished ones."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.decision_log import DecisionLog, open_decision_log
from assistant.agent_policy import ACTIONS, Decision
from state.decision_log import DECISION_ACTIONS, DecisionLogError

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def decision(action: str = "preannotate", key: str = "preannotate:p3:v+f:abc", project: int = 3) -> Decision:
    return Decision(
        action,  # type: ignore[arg-type]
        project,
        key,
        "4 unlabeled tasks have no prediction",
        {"labels": ["cat", "dög"], "checkpoint": "base-v1", "tasks": 4},
        {"unpredicted": 4},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionLog]:
    if request.param == "sqlite":
        opened = open_decision_log(None, home=tmp_path)
        yield opened
        opened.close()
        return
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    try:
        opened = open_decision_log(PG_URL, table_prefix=prefix)
    except DecisionLogError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}: {exc}")
    try:
        yield opened
    finally:
        with opened.rows._store.cursor() as cur:  # only the table this test created
            cur.execute(f"DROP TABLE IF EXISTS {prefix}agent_decisions")
        opened.close()


def test_rows_are_appended_and_the_latest_row_is_the_state(log: DecisionLog) -> None:
    d = decision()
    assert log.latest(d.key) is None
    pending = log.append(d, "pending", at=T0)
    done = log.append(d, "done", {"posted": 4, "seconds": 2.5}, at=T0 + dt.timedelta(seconds=3))
    assert pending.seq < done.seq and pending.attempt == done.attempt == 1
    latest = log.latest(d.key)
    assert latest is not None and latest.status == "done" and latest.outcome == {"posted": 4, "seconds": 2.5}
    assert latest.decision == d and latest.at == T0 + dt.timedelta(seconds=3)
    assert [r.status for r in log.records(3)] == ["pending", "done"]  # nothing was overwritten
    assert log.records(4) == []


def test_unfinished_decisions_are_found_after_a_restart(tmp_path: Path) -> None:
    first = open_decision_log(None, home=tmp_path)
    a, b, c = decision(key="a"), decision("select", key="b"), decision("train", key="c")
    first.append(a, "pending")
    first.append(a, "done")
    first.append(b, "pending")
    first.append(c, "pending")
    first.append(c, "running", {"task_id": "celery-1"})
    first.close()  # the agent is killed
    again = open_decision_log(None, home=tmp_path)
    try:
        unfinished = again.unfinished(3)
        assert [(r.key, r.status) for r in unfinished] == [("b", "pending"), ("c", "running")]
        assert unfinished[1].outcome == {"task_id": "celery-1"}
    finally:
        again.close()


def test_queries_for_memory_and_budget(log: DecisionLog) -> None:
    log.append(decision("preannotate", "p1"), "done", {"seconds": 60}, at=T0 - dt.timedelta(days=1))
    log.append(decision("rescore", "p2"), "done", {"seconds": 30}, at=T0 + dt.timedelta(hours=1))
    log.append(decision("select", "s1"), "failed", {"error": "x"}, at=T0 + dt.timedelta(hours=2))
    last = log.last(3, ["preannotate", "rescore", "repredict"])
    assert last is not None and last.key == "p2"
    assert log.last(3, ["select"]) is None
    assert log.last(3, ["select"], "failed") is not None
    today = log.done_since(3, T0, ["preannotate", "rescore", "select"])
    assert [r.key for r in today] == ["p2"]
    assert [r.key for r in log.states(3)] == ["p1", "p2", "s1"]
    newest = log.records(3, limit=2, newest=True)
    assert [r.key for r in newest] == ["p2", "s1"]


def test_attempts_carry_over_and_bad_input_is_refused(log: DecisionLog) -> None:
    d = decision()
    log.append(d, "failed", {"error": "boom"}, attempt=2)
    assert log.append(d, "pending").attempt == 2
    with pytest.raises(ValueError, match="unknown decision status"):
        log.append(d, "finished")  # type: ignore[arg-type]


def test_bad_urls_and_prefixes_say_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DecisionLogError, match="Fix: Use sqlite"):
        open_decision_log("mysql://x/y", home=tmp_path)
    with pytest.raises(DecisionLogError, match="Invalid decision log table prefix"):
        open_decision_log(None, home=tmp_path, table_prefix="Bad-Prefix")
    with pytest.raises(DecisionLogError, match="ASSISTANT_AGENT_LOG_URL"):
        open_decision_log(None)
    path = tmp_path / "elsewhere" / "log.db"
    opened = open_decision_log(f"sqlite:///{path}")
    opened.close()
    assert path.is_file()


def test_the_logs_actions_are_the_policys() -> None:
    # The core cannot import state/ (import-linter), so the log's list and the policy's type name the
    # actions twice; the dashboard filters by the log's, the agent decides with the policy's.
    assert DECISION_ACTIONS == ACTIONS


def test_an_unknown_action_is_refused_with_the_known_ones(log: DecisionLog) -> None:
    with pytest.raises(ValueError, match="unknown decision action 'dance'; known: guard, preannotate"):
        log.rows.append(3, "dance:p3:1", "dance", "pending", reason="no such action")
