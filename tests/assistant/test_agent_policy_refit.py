"""The policy re-predicts when the project's calibration was refit (assistant/agent_policy.py)."""

from __future__ import annotations

import datetime as dt

from assistant.agent_policy import Memory, Observation, Policy

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
LABELS = ("cat", "dog", "snow")


def _observe(calibration: str | None, predicted_calibration: str | None, unpredicted: tuple[int, ...]) -> Observation:
    memory = Memory(
        predicted_checkpoint="mkt-p3-r0001",
        predicted_labels=LABELS,
        predicted_calibration=predicted_calibration,
        selected_version="mkt-p3-r0001+" + Observation(3, NOW, "x", LABELS).fingerprint,
    )
    return Observation(
        project=3,
        now=NOW,
        checkpoint="mkt-p3-r0001",
        labels=LABELS,
        calibration=calibration,
        tasks=200,
        unlabeled=150,
        unpredicted=unpredicted,
        queue=100,
        memory=memory,
    )


def test_a_refit_calibration_repredicts_the_unlabeled_tasks_once() -> None:
    (decision,) = Policy().decide(_observe("mkt-p3-r0001/refit-1", None, (4, 5)))
    assert decision.action == "repredict"
    assert "calibration of mkt-p3-r0001 was refit" in decision.reason and "2 unlabeled tasks" in decision.reason
    assert decision.params["calibration"] == "mkt-p3-r0001/refit-1"
    assert decision.key.endswith(":mkt-p3-r0001/refit-1") and decision.saw["calibration"] == "mkt-p3-r0001/refit-1"
    # Once predicted with it, nothing more to do; the next refit is a new decision with a new key.
    assert Policy().decide(_observe("mkt-p3-r0001/refit-1", "mkt-p3-r0001/refit-1", ())) == []
    (later,) = Policy().decide(_observe("mkt-p3-r0001/refit-2", "mkt-p3-r0001/refit-1", (4,)))
    assert later.action == "repredict" and later.key != decision.key


def test_without_a_project_calibration_nothing_changes() -> None:
    # The model's own calibration serves (live agents that do not observe a calibration): no decision.
    assert Policy().decide(_observe(None, None, ())) == []
    (new,) = Policy().decide(_observe(None, None, (7,)))
    assert new.action == "preannotate" and "calibration" not in new.params and new.key.count(":") == 3
