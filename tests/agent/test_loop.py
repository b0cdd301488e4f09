"""The agent's loop with a fake world: execution order, idempotence, retries, deferrals, rounds, stops."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.decision_log import DecisionLog, open_decision_log
from agent.execute import Interrupted
from agent.loop import Agent, run_forever
from assistant.agent_policy import Policy, PolicyConfig
from tests.agent._fakes import WorldExecutor, WorldLooker, write_world

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DecisionLog]:
    opened = open_decision_log(None, home=tmp_path)
    yield opened
    opened.close()


def make(tmp_path: Path, log: DecisionLog, config: PolicyConfig | None = None, **executor: object):
    world = tmp_path / "world.json"
    write_world(world)
    clock = Clock()
    ex = WorldExecutor(world, tmp_path / "actions.txt", **executor)  # type: ignore[arg-type]
    agent = Agent(Policy(config or PolicyConfig()), WorldLooker(world, log), ex, log, clock=clock)
    return agent, ex, world, clock


def test_a_step_runs_each_decision_once_in_order_and_the_next_step_does_nothing(
    tmp_path: Path, log: DecisionLog
) -> None:
    agent, ex, _, _ = make(tmp_path, log)
    report = agent.step(3)
    assert [d.action for d in report.decisions] == ["preannotate", "select"]
    assert [(r.decision.action, r.status) for r in report.records] == [
        ("preannotate", "pending"),
        ("preannotate", "done"),
        ("select", "pending"),
        ("select", "done"),
    ]
    assert ex.lines() == [f"start {report.decisions[0].key}", f"end {report.decisions[0].key}",
                          f"start {report.decisions[1].key}", f"end {report.decisions[1].key}"]  # fmt: skip
    again = agent.step(3)
    assert again.decisions == [] and again.records == [] and len(ex.lines()) == 4


def test_the_same_decision_twice_is_skipped(tmp_path: Path, log: DecisionLog) -> None:
    agent, ex, world, _ = make(tmp_path, log)
    agent.step(3)
    # The world goes back (say the predictions were deleted): the very same decision comes up again.
    write_world(world, unpredicted=[1, 2, 3, 4])
    report = agent.step(3)
    assert [d.action for d in report.decisions] == ["preannotate"]
    assert report.skipped == [report.decisions[0].key] and report.records == []
    assert len(ex.lines()) == 4


def test_a_failed_decision_is_retried_after_the_delay_up_to_the_limit(tmp_path: Path, log: DecisionLog) -> None:
    config = PolicyConfig(max_attempts=2, retry_after_s=60)
    agent, ex, _, clock = make(tmp_path, log, config, fail={"preannotate": 5})
    first = agent.step(3)
    failed = [r for r in first.records if r.decision.action == "preannotate"][-1]
    assert failed.status == "failed" and "RuntimeError: preannotate broke" in failed.outcome["error"]
    assert agent.step(3).skipped  # too early
    clock.advance(61)
    second = [r for r in agent.step(3).records if r.decision.action == "preannotate"]
    assert [(r.status, r.attempt) for r in second] == [("pending", 2), ("failed", 2)]
    clock.advance(3600)
    assert not [r for r in agent.step(3).records if r.decision.action == "preannotate"]  # no third try
    assert sum(line.startswith("start preannotate") for line in ex.lines()) == 2


def test_a_round_is_queued_followed_without_noise_and_its_promotion_reacted_to(
    tmp_path: Path, log: DecisionLog
) -> None:
    agent, ex, world, _ = make(tmp_path, log, round_polls=3)
    agent.step(3)
    write_world(world, new_corrections=60, watermark=77)
    queued = agent.step(3)
    train = [r for r in queued.records if r.decision.action == "train"]
    assert [r.status for r in train] == ["pending", "running"] and train[-1].outcome == {"task_id": "round-1"}
    # While the round runs: the lock is held (the policy decides no second round), no new rows.
    write_world(world, round_holder="round-1")
    assert agent.step(3).records == []
    assert agent.step(3).records == []
    write_world(world, round_holder=None)
    done = agent.step(3)
    assert [(r.decision.action, r.status) for r in done.records][:1] == [("train", "done")]
    # The promotion (the fake round promoted mkt-p3-r0001): re-predict, then re-select.
    after = [(r.decision.action, r.status) for r in done.records[1:]]
    assert after == [("repredict", "pending"), ("repredict", "done"), ("select", "pending"), ("select", "done")]
    assert [line.split()[0] for line in ex.lines()].count("queue") == 1


def test_deferred_rounds_are_logged_once_per_day_and_never_run(tmp_path: Path, log: DecisionLog) -> None:
    agent, ex, world, clock = make(tmp_path, log, PolicyConfig(max_rounds_per_day=0, gpu_minutes_per_day=10))
    agent.step(3)
    write_world(world, new_corrections=60)
    deferred = [r for r in agent.step(3).records if r.decision.action == "train"]
    assert [r.status for r in deferred] == ["deferred"] and "budget 10 per day" in deferred[0].decision.reason
    assert [r for r in agent.step(3).records if r.decision.action == "train"] == []
    clock.advance(86_400)
    assert [r.status for r in agent.step(3).records if r.decision.action == "train"] == ["deferred"]
    assert not any(line.startswith("queue") for line in ex.lines())


def test_a_stop_during_an_action_leaves_it_pending_and_the_next_agent_resumes_it(
    tmp_path: Path, log: DecisionLog
) -> None:
    agent, ex, world, _ = make(tmp_path, log, block_on="select")
    stopper = threading.Timer(0.3, agent.stop.set)
    stopper.start()
    with pytest.raises(Interrupted):
        agent.step(3)
    states = {r.decision.action: r.status for r in log.states(3)}
    assert states == {"preannotate": "done", "select": "pending"}
    fresh = Agent(agent.policy, WorldLooker(world, log), WorldExecutor(world, ex.actions), log)
    resumed = fresh.step(3)
    assert [(r.decision.action, r.status) for r in resumed.records] == [("select", "done")]
    assert [line.split()[0] + " " + line.split()[1].split(":")[0] for line in ex.lines()] == [
        "start preannotate",
        "end preannotate",
        "start select",
        "start select",
        "end select",
    ]


def test_run_forever_steps_claimed_projects_and_passes_events(tmp_path: Path, log: DecisionLog) -> None:
    agent, _, _, _ = make(tmp_path, log)
    seen: list[tuple[int, tuple[str, ...]]] = []
    calls = {"wait": 0}

    def wait(timeout: float) -> list[tuple[str, int]]:
        del timeout
        calls["wait"] += 1
        if calls["wait"] >= 2:
            agent.stop.set()
        return [("TASKS_CREATED", 3), ("PROJECT_UPDATED", 9)]

    def on_step(report) -> None:
        obs = report.observation
        seen.append((report.project, obs.events if obs else ()))

    run_forever(agent, lambda: [3, 4], wait=wait, interval_s=0.01, claim=lambda p, h: p == 3, on_step=on_step)
    assert seen[0] == (3, ()) and seen[1] == (3, ("TASKS_CREATED",))
    assert all(project == 3 for project, _ in seen)
