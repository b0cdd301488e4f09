"""The decision log as a story, and the decisions that led to a round in its report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from agent.decision_log import open_decision_log
from agent.report import add_to_round_report, describe_outcome, story
from assistant.agent_policy import Decision

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def _d(action: str, key: str, reason: str) -> Decision:
    return Decision(action, 3, key, reason)  # type: ignore[arg-type]


def test_outcomes_read_as_sentences() -> None:
    assert describe_outcome("preannotate", {"posted": 24, "model_version": "v+f", "seconds": 8.1}) == (
        "posted 24 with v+f (8 s)"
    )
    assert "2 failed" in describe_outcome("rescore", {"posted": 3, "failed": {"not_found": 2}, "model_version": "v"})
    assert describe_outcome("train", {"task_id": "abcdef0123456789", "queued": "queued"}) == "round abcdef012345 queued"
    text = describe_outcome(
        "train",
        {
            "round_id": "r0002",
            "status": "promoted",
            "current_version": "mkt-p3-r0002",
            "metrics": {"mAP": 61.23, "delta_mAP": 2.0},
        },
    )
    assert text == "round r0002 promoted: serving mkt-p3-r0002, held-out mAP 61.2 (+2.0)"
    assert describe_outcome("select", {"error": "no workers"}) == "error: no workers"


def test_the_story_and_the_round_report(tmp_path: Path) -> None:
    log = open_decision_log(None, home=tmp_path)
    try:
        old = _d("train", "train:p3:w5", "an older round")
        log.append(old, "done", {"round_id": "r0001", "status": "kept"}, at=T0)
        pre = _d("preannotate", "pre", "24 unlabeled tasks have no prediction")
        log.append(pre, "pending", at=T0 + dt.timedelta(minutes=1))
        log.append(pre, "done", {"posted": 24, "model_version": "v+f"}, at=T0 + dt.timedelta(minutes=2))
        train = _d("train", "train:p3:w60", "60 new corrections since the last round (threshold 50): running a round")
        log.append(train, "pending", at=T0 + dt.timedelta(minutes=3))
        log.append(train, "running", {"task_id": "celery-1"}, at=T0 + dt.timedelta(minutes=3))
        report_dir = tmp_path / "reports" / "3" / "r0002"
        report_dir.mkdir(parents=True)
        (report_dir / "report.md").write_text("# Project 3, round r0002\n\nHeld-out metrics ...\n")
        outcome = {"round_id": "r0002", "status": "promoted", "report_path": str(report_dir / "report.md")}
        done = log.append(train, "done", outcome, at=T0 + dt.timedelta(minutes=20))

        lines = story(log.records(3))
        assert len(lines) == 3 and lines[1].startswith("2026-03-02 09:02:00  p3  preannotate done")
        assert lines[2].endswith("-> round r0002 promoted: serving ?")
        assert len(story(log.records(3), every_row=True)) == 6

        written = add_to_round_report(log, done)
        assert written == report_dir / "agent-decisions.md"
        text = (report_dir / "report.md").read_text()
        assert text.startswith("# Project 3, round r0002") and text.count("## Agent decisions") == 1
        assert "24 unlabeled tasks have no prediction" in text and "an older round" not in text
        decisions = json.loads((report_dir / "agent-decisions.json").read_text())
        assert [d["action"] for d in decisions] == ["preannotate", "train"]
        add_to_round_report(log, done)  # written again: replaced, not duplicated
        assert (report_dir / "report.md").read_text().count("## Agent decisions") == 1
        assert add_to_round_report(log, log.append(train, "done", {"report_path": None})) is None
    finally:
        log.close()
