"""The dashboard's view models: what each page shows for an empty project, a failed round, a costly pre-annotation."""

from __future__ import annotations

import pytest

from dashboard.views import (
    LockCard,
    agent_view,
    now_view,
    queue_view,
    round_detail,
    rounds_view,
    value_view,
)
from state.decision_log import DecisionRow

BASE = {"version": "base-123", "parent": None, "is_base": True, "metrics": {}, "checkpoint": "/m/base"}


def _row(seq: int, action: str, status: str = "done", **kw) -> DecisionRow:
    return DecisionRow(
        seq=seq,
        at=f"2026-12-07T03:{seq % 60:02d}:00+00:00",
        project=3,
        key=f"{action}:p3:{seq}",
        action=action,
        status=status,
        attempt=1,
        reason=kw.pop("reason", f"because {seq}"),
        **kw,
    )


# --- an empty project ------------------------------------------------------------------------------------
def test_now_of_an_empty_project_says_the_base_model_serves_and_no_agent_runs():
    view = now_view(
        3,
        current=BASE,
        history=[],
        workers=None,
        workers_note="not asked",
        queues=None,
        unacked=None,
        agent_holder=None,
        last_decision=None,
        unfinished=[],
        round_lock=LockCard(None, None),
    )
    assert view.model.version == "base-123" and view.model.is_base and view.model.promoted_at is None
    assert not view.agent.running and view.agent.last_look is None
    assert "no agent runs this project" in view.agent.waiting_for
    assert view.round_lock.text == "free"


def test_value_of_an_empty_project_says_nothing_is_measured():
    view = value_view(3, None)
    assert view.headline.startswith("No annotation counted yet")
    assert not view.negative and view.versions == [] and view.tags == [] and view.plot is None


def test_rounds_agent_and_queue_of_an_empty_project_are_empty():
    rounds = rounds_view(3, [], reports=set(), versions=[], current="base-123", rollback_possible=False)
    assert rounds.rounds == [] and rounds.total == 0 and rounds.failed == 0
    assert not rounds.page.has_next and not rounds.page.has_previous and not rounds.can_roll_back
    agent = agent_view(3, [], action=None, next_before=None, before=None)
    assert agent.rows == [] and "promote" in agent.actions
    queue = queue_view(3, None, None, label_studio_url="http://ls:8080/")
    assert queue.selected == [] and queue.flags == [] and queue.selection_note.startswith("No selection yet")
    assert queue.label_next_link == "http://ls:8080/projects/3/data"


# --- a project with a failed round -----------------------------------------------------------------------
ROUNDS = [
    {
        "round_id": "r0001",
        "status": "promoted",
        "promoted": True,
        "candidate_version": "mkt-p3-r0001",
        "reason": "mAP 41.0 vs 38.0",
        "metrics": {"mAP": 41.0, "delta_mAP": 3.0},
        "finished_at": "2026-12-06T10:00:00+00:00",
        "trigger": "agent",
    },
    {
        "round_id": "r0002",
        "status": "kept",
        "promoted": False,
        "candidate_version": "mkt-p3-r0002",
        "reason": "mAP 39.5 is worse than 41.0 beyond the tolerance",
        "metrics": {"mAP": 39.5, "delta_mAP": -1.5},
        "finished_at": "2026-12-06T11:00:00+00:00",
        "trigger": "manual",
    },
    {
        "round_id": "r0003",
        "status": "failed",
        "reason": "CUDA out of memory",
        "error": "RuntimeError",
        "attempted_version": "mkt-p3-r0003",
        "finished_at": "2026-12-06T12:00:00+00:00",
        "trigger": "schedule",
    },
]


def test_rounds_show_the_failed_round_first_with_its_error_and_the_refused_one_with_its_reason():
    versions = [
        {"version": "mkt-p3-r0001", "parent": "base-123", "round_id": "r0001", "metrics": {"mAP": 41.0}},
        {"version": "mkt-p3-r0002", "parent": "mkt-p3-r0001", "round_id": "r0002", "metrics": {"mAP": 39.5}},
    ]
    view = rounds_view(
        3, ROUNDS, reports={"r0001", "r0002"}, versions=versions, current="mkt-p3-r0001", rollback_possible=True
    )
    assert [r.round_id for r in view.rounds] == ["r0003", "r0002", "r0001"]
    failed, refused, promoted = view.rounds
    assert failed.status == "failed" and failed.reason == "RuntimeError: CUDA out of memory"
    assert not failed.has_report and failed.metric == "–" and failed.candidate == "mkt-p3-r0003"
    assert refused.status == "kept" and "worse" in refused.reason and refused.change == "-1.5"
    assert promoted.status == "promoted" and promoted.change == "+3.0" and promoted.has_report
    assert view.failed == 1 and view.total == 3
    assert [v.version for v in view.versions] == ["mkt-p3-r0002", "mkt-p3-r0001"]
    assert [v.current for v in view.versions] == [False, True]


def test_a_failed_round_without_a_status_reads_as_failed():
    view = rounds_view(
        3, [{"round_id": "r0009", "error": "boom"}], reports=set(), versions=[], current="b", rollback_possible=False
    )
    assert view.rounds[0].status == "failed" and view.rounds[0].reason == "boom"


def test_round_detail_lists_the_plots_of_the_report():
    detail = round_detail(3, "r0001", ROUNDS[0], "# Round r0001", ["report.md", "pr.png", "effort.svg", "data.json"])
    assert detail.plots == ["effort.svg", "pr.png"] and detail.round is not None and detail.round.has_report
    missing = round_detail(3, "r0003", ROUNDS[2], None, [])
    assert missing.markdown is None and missing.round is not None and missing.round.status == "failed"


@pytest.mark.parametrize("page", [1, 2, 3])
def test_rounds_are_paged_newest_first(page):
    many = [{"round_id": f"r{i:04d}", "status": "kept"} for i in range(1, 121)]
    view = rounds_view(3, many, reports=set(), versions=[], current="b", rollback_possible=False, page=page)
    expected_first = 120 - 50 * (page - 1)
    assert view.rounds[0].round_id == f"r{expected_first:04d}"
    assert len(view.rounds) == min(50, 120 - 50 * (page - 1))
    assert view.page.has_previous == (page > 1) and view.page.has_next == (page < 3)


# --- pre-annotation that costs more than it saves ----------------------------------------------------------
COSTLY = {
    "totals": {"tasks": 40, "edits_per_task": 3.1, "scratch_per_task": 2.5, "saved_share": -0.24},
    "in_service": {"tasks": 10, "saved_share": -0.5},
    "versions": [
        {
            "model_version": "mkt-p3-r0001",
            "first_at": "2026-12-06T12:00:00+00:00",
            "tasks": 10,
            "edits_per_task": 3.75,
            "scratch_per_task": 2.5,
            "saved_share": -0.5,
        },
        {
            "model_version": "base-123",
            "first_at": "2026-12-05T12:00:00+00:00",
            "tasks": 30,
            "edits_per_task": 2.9,
            "scratch_per_task": 2.5,
            "saved_share": -0.16,
        },
    ],
    "tags": {
        "dog": {"kept": 30, "removed": 2, "added": 1, "precision": 0.9375, "recall": 0.9677, "saved": 28.0},
        "cat": {"kept": 1, "removed": 40, "added": 3, "precision": 0.0244, "recall": 0.25, "saved": -39.0},
        "sofa": {
            "kept": 0,
            "removed": 12,
            "added": 0,
            "precision": 0.0,
            "recall": None,
            "saved": -12.0,
            "guard": "tripped",
        },
    },
    "guard": {"tripped": [{"tag": "sofa"}]},
    "counting": {"counted": 40, "pending": 2},
}


def test_value_reads_honestly_negative_when_pre_annotation_costs_more():
    view = value_view(3, COSTLY, plot="effort.png", plot_round="r0001")
    assert view.negative
    assert "costs 24% more edits than labeling from scratch" in view.headline
    assert "with the model in service it costs 50% more" in view.headline
    assert "saves" not in view.headline
    # the costliest tag first, the one that saves last; the guard's state shown
    assert [t.tag for t in view.tags] == ["cat", "sofa", "dog"]
    assert view.tags[0].saved == pytest.approx(-39.0) and view.tags[0].precision == "2%"
    assert view.tags[1].guard == "tripped" and view.tags[1].recall == "–" and view.tripped == ["sofa"]
    # model versions in time order, each with its own verdict
    assert [v.model_version for v in view.versions] == ["base-123", "mkt-p3-r0001"]
    assert view.versions[1].verdict == "costs 50% more edits than labeling from scratch"
    assert view.counted == 40 and view.pending == 2
    # the chart: versions in time order, the tallest bar at full height, edits above from scratch
    assert [b.label for b in view.chart] == ["base-123", "mkt-p3-r0001"]
    assert view.chart[1].edits_h == pytest.approx(1.0) and view.chart[1].scratch_h == pytest.approx(2.5 / 3.75)
    assert all(b.edits > b.scratch for b in view.chart)


def test_value_says_saves_when_it_saves():
    saving = {"totals": {"tasks": 10, "saved_share": 0.3}, "versions": [], "tags": {}}
    view = value_view(3, saving)
    assert not view.negative and "saves 30% of the edits" in view.headline


# --- agent and queue -------------------------------------------------------------------------------------
def test_agent_story_lines_carry_the_outcome_and_failure():
    rows = [
        _row(5, "train", "failed", outcome={"error": "the workers did not answer"}),
        _row(4, "select", outcome={"chosen": 100, "strategy": "hybrid", "first": [{"task": 1, "why": "x"}]}),
        _row(3, "preannotate", "running"),
    ]
    view = agent_view(3, rows, action=None, next_before=2, before=None)
    assert view.rows[0].line.endswith("→ failed: the workers did not answer")
    assert "chosen=100" in view.rows[1].line and "strategy=hybrid" in view.rows[1].line
    assert view.rows[2].line.endswith("(running)")
    assert view.next_before == 2


def test_now_says_what_the_agent_waits_for_and_when_the_version_was_promoted():
    current = {"version": "mkt-p3-r0001", "parent": "base-123", "metrics": {"mAP": 41.0, "loss": 0.3}}
    history = [{"event": "promote", "version": "mkt-p3-r0001", "previous": "base-123", "at": "2026-12-06T10:00:00"}]
    view = now_view(
        3,
        current=current,
        history=history,
        workers={"predict": ["w2@h", "w1@h"], "train": []},
        queues={"predict": 4, "train": 0},
        unacked=1,
        agent_holder="agent@host:123",
        last_decision=_row(9, "select"),
        unfinished=[_row(10, "preannotate", "running", reason="new tasks")],
        round_lock=LockCard("round@host", 12.0),
    )
    assert view.model.promoted_at == "2026-12-06T10:00:00" and view.model.metrics == {"mAP": 41.0}
    assert view.agent.running and view.agent.waiting_for.startswith("preannotate (running since")
    assert view.agent.last_look == _row(9, "select").at  # no alive file: its newest decision
    assert view.workers == {"predict": ["w1@h", "w2@h"], "train": []}
    assert view.round_lock.text == "held by round@host, expires in 12 s unless renewed"


def test_queue_shows_the_selection_and_the_review_flags_with_links():
    select = _row(
        7, "select", outcome={"chosen": 80, "strategy": "hybrid", "first": [{"task": 11, "why": "uncertain"}]}
    )
    review = _row(
        8, "review", params={"flags": [{"task": 21, "annotation": 5, "quality": 0.12, "why": "'dog' likely missed"}]}
    )
    view = queue_view(3, select, review, label_studio_url="http://ls:8080")
    assert view.selected[0].task == 11 and view.selected[0].link == "http://ls:8080/projects/3/data?task=11"
    assert "first 1 of 80" in view.selection_note
    assert view.flags[0].reason == "'dog' likely missed (label quality 0.12)"
