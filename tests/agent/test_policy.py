"""The agent's policy, rule by rule, without any service (assistant/agent_policy.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json

import pytest

from assistant.agent_policy import (
    ACTIONS,
    Budget,
    Decision,
    Flag,
    LastRound,
    Memory,
    Observation,
    Policy,
    PolicyConfig,
    task_digest,
    vocabulary_fingerprint,
)
from state.contracts import vocabulary_fingerprint as workers_fingerprint

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
LABELS = ("cat", "dog", "snow")


def observe(**changes: object) -> Observation:
    """A settled project: predicted, queue full, nothing new."""
    base = Observation(
        project=3,
        now=NOW,
        checkpoint="mkt-p3-r0001",
        labels=LABELS,
        tasks=200,
        unlabeled=150,
        unpredicted=(),
        queue=80,
        new_corrections=5,
        watermark=120,
        memory=Memory(
            predicted_checkpoint="mkt-p3-r0001",
            predicted_labels=LABELS,
            selected_version=f"mkt-p3-r0001+{vocabulary_fingerprint(LABELS)}",
        ),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def actions(decisions: list[Decision]) -> list[str]:
    return [d.action for d in decisions]


def test_a_settled_project_needs_nothing() -> None:
    assert Policy().decide(observe()) == []


def test_the_fingerprint_is_the_workers_one() -> None:
    for labels in ([], ["a"], ["cat", "dog"], ["zébra", "a b", "x\x1fy"]):
        assert vocabulary_fingerprint(labels) == workers_fingerprint(labels)
    obs = observe()
    assert obs.model_version == f"mkt-p3-r0001+{workers_fingerprint(list(LABELS))}"


# --- predictions -------------------------------------------------------------------------------------
def test_first_look_preannotates_and_selects_the_first_batch() -> None:
    obs = observe(memory=Memory(), unpredicted=(5, 3, 4), queue=0)
    decisions = Policy().decide(obs)
    assert actions(decisions) == ["preannotate", "select"]
    pre = decisions[0]
    assert "first look" in pre.reason
    assert pre.params["labels"] == list(LABELS) and pre.params["checkpoint"] == "mkt-p3-r0001"
    assert pre.params["task_ids"] == [3, 4, 5] and pre.params["tasks"] == 3
    assert pre.key == f"preannotate:p3:{obs.model_version}:{task_digest([3, 4, 5])}"


def test_new_imports_are_preannotated_and_the_key_names_the_task_set() -> None:
    one = Policy().decide(observe(unpredicted=(7, 8)))
    assert actions(one) == ["preannotate"]
    assert "2 unlabeled tasks have no prediction" in one[0].reason
    same = Policy().decide(observe(unpredicted=(8, 7)))
    other = Policy().decide(observe(unpredicted=(7, 8, 9)))
    assert one[0].key == same[0].key != other[0].key


def test_a_novel_tag_is_rescored_and_reorders_the_queue() -> None:
    labels = (*LABELS, "zebra")
    decisions = Policy().decide(observe(labels=labels, unpredicted=(1, 2)))
    assert actions(decisions) == ["rescore", "select"]
    rescore = decisions[0]
    assert "added 'zebra'" in rescore.reason and "cache" in rescore.reason
    assert rescore.params["labels"] == list(labels)
    assert rescore.params["fingerprint"] == vocabulary_fingerprint(labels)
    assert "vocabulary changed since the last selection" in decisions[1].reason


def test_a_removed_tag_is_rescored_even_with_nothing_left_to_score() -> None:
    decisions = Policy().decide(observe(labels=("cat", "dog"), unpredicted=()))
    assert decisions[0].action == "rescore" and "removed 'snow'" in decisions[0].reason
    assert decisions[0].params["tasks"] == 0


def test_a_promotion_repredicts_and_reselects() -> None:
    last = LastRound("r0002", "promoted", "threshold", NOW - dt.timedelta(minutes=3), "mkt-p3-r0002")
    decisions = Policy().decide(observe(checkpoint="mkt-p3-r0002", unpredicted=(1, 2, 3), last_round=last))
    assert actions(decisions) == ["repredict", "select"]
    assert "mkt-p3-r0001 to mkt-p3-r0002 (round r0002, threshold, promoted)" in decisions[0].reason
    assert "model in service changed" in decisions[1].reason


def test_a_config_change_wins_over_a_promotion_in_the_same_look() -> None:
    decisions = Policy().decide(observe(checkpoint="mkt-p3-r0002", labels=(*LABELS, "zebra"), unpredicted=(1,)))
    assert decisions[0].action == "rescore"


# --- rounds ------------------------------------------------------------------------------------------
def test_the_threshold_runs_a_round_keyed_by_the_watermark() -> None:
    policy = Policy(PolicyConfig(round_threshold=50))
    assert Policy(PolicyConfig(round_threshold=50)).decide(observe(new_corrections=49)) == []
    (train,) = policy.decide(observe(new_corrections=50, watermark=321))
    assert train.action == "train" and train.status == "decided"
    assert train.key == "train:p3:w321" and train.params == {
        "trigger": "threshold",
        "watermark": 321,
        "new_corrections": 50,
    }
    assert "50 new corrections" in train.reason
    assert Policy(PolicyConfig(round_threshold=0)).decide(observe(new_corrections=10_000)) == []


def test_no_second_round_while_one_is_queued_or_running() -> None:
    assert Policy().decide(observe(new_corrections=500, round_holder="celery-id")) == []


def test_the_schedule_runs_a_round_once_per_firing() -> None:
    policy = Policy(PolicyConfig(round_threshold=0, schedule_min_new=3))
    fired = NOW - dt.timedelta(minutes=10)
    (train,) = policy.decide(observe(schedule_fired_at=fired, new_corrections=3))
    assert train.params["trigger"] == "schedule" and "schedule fired" in train.reason
    assert policy.decide(observe(schedule_fired_at=fired, new_corrections=2)) == []
    after = LastRound("r0003", "kept", "agent", fired + dt.timedelta(minutes=5))
    assert policy.decide(observe(schedule_fired_at=fired, new_corrections=30, last_round=after)) == []
    before = dataclasses.replace(after, finished_at=fired - dt.timedelta(hours=1))
    assert actions(policy.decide(observe(schedule_fired_at=fired, new_corrections=30, last_round=before))) == ["train"]


@pytest.mark.parametrize(
    ("config", "budget", "last_minutes_ago", "kind", "text"),
    [
        (PolicyConfig(max_rounds_per_day=2), Budget(rounds=2), None, "rounds", "2 rounds ran today (limit 2)"),
        (PolicyConfig(gpu_minutes_per_day=60), Budget(gpu_minutes=40), None, "gpu", "round takes ~30 (budget 60"),
        (PolicyConfig(gpu_minutes_per_day=60), Budget(gpu_minutes=40, round_minutes=15), None, None, None),
        (PolicyConfig(min_round_interval_s=3600), Budget(), 20, "interval-r0004", "finished 20 min ago"),
        (PolicyConfig(min_round_interval_s=3600), Budget(), 61, None, None),
    ],
)
def test_limits_defer_a_due_round(
    config: PolicyConfig, budget: Budget, last_minutes_ago: int | None, kind: str | None, text: str | None
) -> None:
    last = None
    if last_minutes_ago is not None:
        last = LastRound("r0004", "promoted", "agent", NOW - dt.timedelta(minutes=last_minutes_ago))
    (train,) = Policy(config).decide(observe(new_corrections=80, budget=budget, last_round=last))
    if kind is None:
        assert train.status == "decided" and train.key.startswith("train:p3:w")
        return
    assert train.status == "deferred"
    assert train.key == f"train-deferred:p3:2026-03-02:{kind}"
    assert text is not None and text in train.reason


# --- selection ---------------------------------------------------------------------------------------
def test_a_low_queue_selects_the_next_batch() -> None:
    policy = Policy(PolicyConfig(queue_low_water=20, batch_size=50, strategy="uncertainty"))
    assert policy.decide(observe(queue=20)) == []
    (select,) = policy.decide(observe(queue=19, unlabeled=150))
    assert select.params == {"k": 50, "strategy": "uncertainty", "model_version": observe().model_version}
    assert "19 unlabeled tasks left" in select.reason and select.key == f"select:p3:{observe().model_version}:u150"
    # Nothing outside the queue: selecting again would choose the same tasks.
    assert policy.decide(observe(queue=10, unlabeled=10)) == []
    assert policy.decide(observe(unlabeled=0, queue=0)) == []


def test_reselection_after_a_change_can_be_switched_off() -> None:
    policy = Policy(PolicyConfig(reselect_on_change=False))
    assert actions(policy.decide(observe(checkpoint="mkt-p3-r0002", unpredicted=(1,)))) == ["repredict"]


# --- review ------------------------------------------------------------------------------------------
def test_strong_disagreements_are_queued_for_review_once() -> None:
    flags = (
        Flag(11, 101, 0.25, "possibly wrong 'cat'"),
        Flag(12, 102, 0.05, "possibly missing 'snow'"),
        Flag(13, 103, 0.6, "the model agrees"),
    )
    (review,) = Policy(PolicyConfig(review_quality=0.3)).decide(observe(flags=flags, rated=100))
    assert [f["task"] for f in review.params["flags"]] == [12, 11]  # worst first, the agreeing one left out
    assert "task 12, possibly missing 'snow'" in review.reason
    flagged = Memory(**{**dataclasses.asdict(observe().memory), "flagged": frozenset({12})})
    (again,) = Policy().decide(observe(flags=flags, memory=flagged, rated=100))
    assert [f["task"] for f in again.params["flags"]] == [11] and again.key != review.key
    capped = Policy(PolicyConfig(review_max=1)).decide(observe(flags=flags, rated=100))[0]
    assert [f["task"] for f in capped.params["flags"]] == [12]


def test_a_model_that_disagrees_with_everything_does_not_flood_the_reviewers() -> None:
    flags = tuple(Flag(t, t, 0.01 * (t % 7), "possibly wrong 'cat'") for t in range(1, 41))
    policy = Policy(PolicyConfig(review_fraction=0.05))
    # The first strong disagreement is flagged at once (5% of 1, rounded up) ...
    (first,) = policy.decide(observe(flags=flags[:1], rated=1))
    assert [f["task"] for f in first.params["flags"]] == [1]
    # ... then at most 5% of the rated annotations in all: 2 of 40, the worst ones.
    (review,) = policy.decide(observe(flags=flags, rated=40))
    assert [f["task"] for f in review.params["flags"]] == [7, 14]
    full = Memory(**{**dataclasses.asdict(observe().memory), "flagged": frozenset({7, 14})})
    assert policy.decide(observe(flags=flags, rated=40, memory=full)) == []


# --- the whole table ---------------------------------------------------------------------------------
def test_decisions_come_in_execution_order_and_survive_json() -> None:
    obs = observe(
        labels=(*LABELS, "zebra"),
        unpredicted=(1, 2),
        flags=(Flag(9, 90, 0.01, "possibly wrong 'dog'"),),
        rated=10,
        new_corrections=60,
        queue=3,
    )
    decisions = Policy().decide(obs)
    assert actions(decisions) == ["rescore", "review", "train", "select"]
    order = [ACTIONS.index(a) for a in actions(decisions)]
    assert order == sorted(order)
    for d in decisions:
        doc = json.loads(json.dumps(d.to_json()))
        assert Decision.from_json(doc) == d
        assert d.saw["model_version"] == obs.model_version and d.saw["new_corrections"] == 60


@pytest.mark.parametrize(
    ("new_labels", "promoted", "pending", "corrections", "busy", "queue"),
    list(itertools.product([False, True], [False, True], [False, True], [0, 60], [False, True], [0, 80])),
)
def test_every_situation_gives_deterministic_unique_keys(
    new_labels: bool, promoted: bool, pending: bool, corrections: int, busy: bool, queue: int
) -> None:
    obs = observe(
        labels=(*LABELS, "zebra") if new_labels else LABELS,
        checkpoint="mkt-p3-r0002" if promoted else "mkt-p3-r0001",
        unpredicted=(4, 5) if pending else (),
        new_corrections=corrections,
        round_holder="x" if busy else None,
        queue=queue,
    )
    first, second = Policy().decide(obs), Policy().decide(obs)
    assert first == second
    keys = [d.key for d in first]
    assert len(keys) == len(set(keys))
    predicted = [d for d in first if d.action in ("preannotate", "rescore", "repredict")]
    assert len(predicted) == (1 if new_labels or promoted or pending else 0)
    assert any(d.action == "train" for d in first) == (corrections >= 50 and not busy)
    assert any(d.action == "select" for d in first) == (queue < 20 or new_labels or promoted)


# --- what pre-annotation saves, and the guard ----------------------------------------------------
def test_prediction_decisions_say_what_the_model_in_service_saves() -> None:
    from assistant.agent_policy import Saving

    measured = Saving(tasks=120, ratio=0.74, saved_share=0.26, precision=0.81)
    (pre,) = Policy().decide(observe(unpredicted=(7, 8), saving=measured, queue=80))
    assert pre.action == "preannotate"
    assert "mkt-p3-r0001 saved annotators 26% of their edits on 120 tasks (0.74x labeling from scratch" in pre.reason
    assert pre.params["expected_saving"]["ratio"] == 0.74 and pre.saw["saving"]["tasks"] == 120

    costly = Saving(tasks=40, ratio=1.3, saved_share=-0.3, precision=0.4, in_service=False)
    re = Policy().decide(observe(checkpoint="mkt-p3-r0002", unpredicted=(7,), saving=costly))[0]
    assert (
        re.action == "repredict" and "earlier models (mkt-p3-r0002 not measured yet) cost annotators 30%" in re.reason
    )
    (fresh,) = Policy().decide(observe(unpredicted=(7,), saving=Saving(0, None, None)))
    assert "no annotation has measured what mkt-p3-r0001 saves annotators yet" in fresh.reason
    # Without a measurement (the offline simulations), the reason and the key are as before.
    plain = Policy().decide(observe(unpredicted=(7, 8)))[0]
    assert pre.key == plain.key and "saves" not in plain.reason and "expected_saving" not in plain.params


def test_each_guard_event_is_logged_once_with_its_reason() -> None:
    from assistant.agent_policy import GuardNote

    notes = (
        GuardNote(4, "dog", "tripped", "tripped: kept 3 of 24 showings: keep rate 12% (interval 4-31%) ..."),
        GuardNote(5, "dog", "resumed", "resumed: model version mkt-p3-r0002 now serves the project"),
    )
    decisions = Policy().decide(observe(guard_events=notes))
    assert actions(decisions) == ["guard", "guard"]
    first, second = decisions
    assert first.key == "guard:p3:e4" and first.params == {"tag": "dog", "event": "tripped", "seq": 4}
    assert "the guard stopped showing 'dog' in project 3: tripped: kept 3 of 24" in first.reason
    assert "the guard shows again 'dog'" in second.reason
    logged = observe(guard_events=notes, memory=dataclasses.replace(observe().memory, guard_seq=4))
    assert [d.key for d in Policy().decide(logged)] == ["guard:p3:e5"]
    with_prediction = Policy().decide(observe(guard_events=notes[:1], unpredicted=(7,)))
    order = [ACTIONS.index(a) for a in actions(with_prediction)]
    assert actions(with_prediction) == ["guard", "preannotate"] and order == sorted(order)


def test_the_executor_only_logs_a_guard_decision() -> None:
    from agent.execute import LabelStudioExecutor
    from agent.report import describe_outcome

    class Services:
        settings = None

    decision = Decision("guard", 3, "guard:p3:e4", "why", {"tag": "dog", "event": "tripped", "seq": 4})
    outcome = LabelStudioExecutor(Services()).run(decision, None, lambda: False)  # type: ignore[arg-type]
    assert outcome.status == "done" and outcome.detail == {"tag": "dog", "event": "tripped"}
    assert describe_outcome("guard", outcome.detail) == "dog tripped: logged"
