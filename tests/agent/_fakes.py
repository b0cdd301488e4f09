"""Fakes for the agent's loop: a project world in a JSON file, an observer over it, an executor that records.

The world is a file so that a subprocess agent (the restart test) and the test share it:
``{"checkpoint", "labels", "unpredicted", "unlabeled", "queue", "new_corrections", "watermark",
"round_holder"}``. The executor appends ``start <key>`` / ``end <key>`` lines to an actions file and
changes the world as the real action would (predicted tasks leave ``unpredicted``, a selection
fills the queue).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.decision_log import DecisionLog
from agent.execute import Interrupted, Outcome
from agent.observe import memory_from_log
from assistant.agent_policy import PREDICTION_ACTIONS, Decision, Observation

WORLD = {
    "checkpoint": "base-v1",
    "labels": ["cat", "dog", "snow"],
    "unpredicted": [1, 2, 3, 4],
    "unlabeled": 4,
    "tasks": 4,
    "queue": 0,
    "new_corrections": 0,
    "watermark": 0,
    "round_holder": None,
}


def write_world(path: Path, **changes: Any) -> None:
    world = {**WORLD, **(json.loads(path.read_text()) if path.is_file() else {}), **changes}
    path.write_text(json.dumps(world))


class WorldLooker:
    """An observer of the world file, with the real memory from the decision log."""

    def __init__(self, world: Path, log: DecisionLog) -> None:
        self.world, self.log = world, log
        self.looks = 0

    def changed(self, project: int, now: dt.datetime) -> bool:
        del project, now
        return True

    def observe(self, project: int, now: dt.datetime, events: Sequence[str] = ()) -> Observation:
        self.looks += 1
        w = json.loads(self.world.read_text())
        return Observation(
            project=project,
            now=now,
            checkpoint=w["checkpoint"],
            labels=tuple(w["labels"]),
            tasks=w["tasks"],
            unlabeled=w["unlabeled"],
            unpredicted=tuple(w["unpredicted"]),
            queue=w["queue"],
            new_corrections=w["new_corrections"],
            watermark=w["watermark"],
            round_holder=w["round_holder"],
            memory=memory_from_log(self.log, project),
            events=tuple(events),
        )


class WorldExecutor:
    """Records what it runs and changes the world; can block on one action (to be killed) or fail."""

    def __init__(
        self,
        world: Path,
        actions: Path,
        *,
        block_on: str | None = None,
        fail: Mapping[str, int] | None = None,
        round_polls: int = 2,
    ) -> None:
        self.world, self.actions = world, actions
        self.block_on = block_on
        self.fail = dict(fail or {})
        self.round_polls = round_polls
        self.polls = 0

    def note(self, text: str) -> None:
        with self.actions.open("a") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def lines(self) -> list[str]:
        return self.actions.read_text().splitlines() if self.actions.is_file() else []

    def run(self, decision: Decision, previous: Mapping[str, Any] | None, should_stop: Any) -> Outcome:
        if decision.action == "train":
            return self._train(decision, previous)
        self.note(f"start {decision.key}")
        if self.block_on == decision.action:
            while True:  # until killed, or asked to stop
                if should_stop():
                    raise Interrupted
                time.sleep(0.05)
        if self.fail.get(decision.action, 0) > 0:
            self.fail[decision.action] -= 1
            raise RuntimeError(f"{decision.action} broke")
        w = json.loads(self.world.read_text())
        if decision.action in PREDICTION_ACTIONS:
            w["unpredicted"] = []
        elif decision.action == "select":
            w["queue"] = min(w["unlabeled"], int(decision.params["k"]))
        self.world.write_text(json.dumps(w))
        self.note(f"end {decision.key}")
        return Outcome("done", {"seconds": 1.0, "posted": 4})

    def _train(self, decision: Decision, previous: Mapping[str, Any] | None) -> Outcome:
        if not previous:
            self.note(f"queue {decision.key}")
            return Outcome("running", {"task_id": "round-1"})
        self.polls += 1
        if self.polls < self.round_polls:
            return Outcome("running", {"task_id": "round-1"})
        self.note(f"round done {decision.key}")
        w = json.loads(self.world.read_text())
        w.update(checkpoint="mkt-p3-r0001", new_corrections=0, unpredicted=list(range(1, w["unlabeled"] + 1)))
        self.world.write_text(json.dumps(w))
        return Outcome("done", {"task_id": "round-1", "round_id": "r0001", "status": "promoted"})
