"""The observer: Label Studio (faked), the ledger, the registry, the round log and the agent's memory."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.decision_log import DecisionLog, open_decision_log
from agent.observe import Observer, last_fire, memory_from_log, rate_annotation
from agent.studio import PredictionRow, ProjectSummary, TaskRow
from assistant.agent_policy import Decision
from state.ledger import Ledger, LedgerEvent, open_ledger
from state.registry import Registry
from studio.config import parse_label_config

CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="tags" toName="image" choice="multiple">'
    '<Choice value="cat"/><Choice value="dog"/><Choice value="snow"/></Choices></View>'
)
NOW = dt.datetime(2026, 3, 4, 10, 30, tzinfo=dt.UTC)  # a Wednesday


def scored(task: int, pred_id: int, version: str, scores: dict[str, float]) -> PredictionRow:
    chosen = [k for k, v in scores.items() if v >= 0.5]
    item = {
        "from_name": "tags",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": chosen},
        "assistant": {"scores": scores, "thresholds": dict.fromkeys(scores, 0.5), "novel": []},
    }
    return PredictionRow(id=pred_id, task=task, model_version=version, result=[item])


def annotation(task: int, ann: int, choices: list[str], parent: int | None) -> LedgerEvent:
    result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": choices}}]
    return LedgerEvent.annotation(
        "ANNOTATION_CREATED", project=3, annotation_id=ann, task=task, result=result, parent_prediction=parent
    )


# --- pure pieces ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * *", dt.datetime(2026, 3, 4, 3, 0, tzinfo=dt.UTC)),
        ("45 10 * * *", dt.datetime(2026, 3, 3, 10, 45, tzinfo=dt.UTC)),
        ("30 10 * * *", NOW),
        ("0 0 * * 1", dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)),  # Monday (cron 1)
        ("*/20 * * * *", dt.datetime(2026, 3, 4, 10, 20, tzinfo=dt.UTC)),
        ("0 12 1 1 *", None),  # New Year's noon: not within the last 8 days
    ],
)
def test_last_fire_follows_cron_semantics(cron: str, expected: dt.datetime | None) -> None:
    assert last_fire(cron, NOW) == expected


def test_an_annotation_the_model_strongly_disagrees_with_is_rated_low() -> None:
    vocab = parse_label_config(CONFIG)
    prediction = scored(5, 50, "v+f", {"cat": 0.9, "dog": 0.2, "snow": 0.97})
    ledger_entry = _entry(annotation(5, 500, ["cat", "dog"], 50))
    flag = rate_annotation(vocab, ledger_entry, prediction)
    assert flag is not None and flag.task == 5 and flag.annotation == 500
    assert flag.quality == pytest.approx(0.0916, abs=1e-3)  # EMA of 0.9, 0.2, 0.03
    assert "possibly missing 'snow'" in flag.why
    agreed = rate_annotation(vocab, _entry(annotation(5, 501, ["cat", "snow"], 50)), prediction)
    assert agreed is not None and agreed.quality > 0.7 and "agrees" in agreed.why
    cancelled = LedgerEvent.annotation("ANNOTATION_CREATED", project=3, annotation_id=502, task=5, was_cancelled=True)
    assert rate_annotation(vocab, _entry(cancelled), prediction) is None
    assert rate_annotation(vocab, ledger_entry, PredictionRow(51, 5, "v+f", [])) is None


def _entry(event: LedgerEvent, seq: int = 1) -> Any:
    from state.ledger import LedgerEntry

    return LedgerEntry(seq, event, "2026-03-04T10:00:00+00:00")


# --- the observer over fakes -------------------------------------------------------------------------
class FakeReader:
    def __init__(self) -> None:
        self.tasks_: list[TaskRow] = []
        self.predictions_: list[PredictionRow] = []
        self.config = CONFIG
        self.summaries = 0

    def summary(self, project: int) -> ProjectSummary:
        self.summaries += 1
        labeled = sum(t.labeled for t in self.tasks_)
        return ProjectSummary(
            project, "p", self.config[-16:], len(self.tasks_), labeled, len(self.predictions_), labeled, self.config
        )

    def tasks(self, project: int) -> list[TaskRow]:
        return list(self.tasks_)

    def predictions(self, project: int) -> list[PredictionRow]:
        return list(self.predictions_)


class FakeLocks:
    def __init__(self) -> None:
        self.held: str | None = None

    def holder(self, project: int) -> str | None:
        return self.held


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[FakeReader, Ledger, DecisionLog, FakeLocks, Observer]]:
    reader, locks = FakeReader(), FakeLocks()
    ledger = open_ledger(None, home=tmp_path)
    log = open_decision_log(None, home=tmp_path)
    registry = Registry(tmp_path / "models", "spec:tiny")
    observer = Observer(
        reader,
        registry,
        ledger,
        locks,
        log,
        models_dir=tmp_path / "models",
        schedule="0 3 * * *",
        full_check_s=600,  # type: ignore[arg-type]
    )
    yield reader, ledger, log, locks, observer
    ledger.close()
    log.close()


def test_an_observation_of_a_project(tmp_path: Path, parts: Any) -> None:
    reader, ledger, log, locks, observer = parts
    version = parse_label_config(CONFIG).model_version(Registry(tmp_path / "models", "spec:tiny").base_version())
    reader.tasks_ = [
        TaskRow(1, {"image": "a", "assistant_rank": 2}, labeled=False),
        TaskRow(2, {"image": "b", "assistant_rank": 1}, labeled=True),
        TaskRow(3, {"image": "c"}, labeled=False),
        TaskRow(4, {"image": "d"}, labeled=False),
    ]
    reader.predictions_ = [
        scored(1, 10, version, {"cat": 0.9, "dog": 0.1, "snow": 0.1}),
        scored(2, 11, version, {"cat": 0.9, "dog": 0.1, "snow": 0.99}),
        scored(3, 12, "older+abc", {"cat": 0.9, "dog": 0.1, "snow": 0.1}),
    ]
    ledger.append([annotation(2, 200, ["cat"], 11)])
    locks.held = "celery-9"
    rounds = tmp_path / "models" / "rounds" / "3" / "rounds.jsonl"
    rounds.parent.mkdir(parents=True)
    today = {"round_id": "r0001", "status": "promoted", "trigger": "agent", "current_version": "mkt-p3-r0001",
             "started_at": "2026-03-04T08:00:00+00:00", "finished_at": "2026-03-04T08:20:00+00:00"}  # fmt: skip
    rounds.write_text(json.dumps(today) + "\n")
    log.append(
        Decision("select", 3, "s", "x", {"model_version": "old+f"}), "done", {"seconds": 120}, at=NOW
    )  # 2 GPU minutes of the agent today

    obs = observer.observe(3, NOW, ["TASKS_CREATED"])
    assert obs.checkpoint.startswith("base-") and obs.labels == ("cat", "dog", "snow")
    assert obs.tasks == 4 and obs.unlabeled == 3 and obs.unpredicted == (3, 4) and obs.queue == 1
    assert obs.new_corrections == 1 and obs.watermark == 1 and obs.round_holder == "celery-9"
    assert (
        obs.last_round is not None and obs.last_round.round_id == "r0001" and obs.last_round.version == "mkt-p3-r0001"
    )
    assert obs.budget.rounds == 1 and obs.budget.gpu_minutes == pytest.approx(22.0)
    assert obs.budget.round_minutes == pytest.approx(20.0)
    assert obs.schedule_fired_at == dt.datetime(2026, 3, 4, 3, 0, tzinfo=dt.UTC)
    assert [(f.task, f.annotation) for f in obs.flags] == [(2, 200)] and "missing 'snow'" in obs.flags[0].why
    assert obs.memory.selected_version == "old+f" and obs.memory.predicted_labels is None
    assert obs.events == ("TASKS_CREATED",)

    # Nothing moved: no full look needed; a new ledger row, or the next day, needs one.
    assert not observer.changed(3, NOW + dt.timedelta(seconds=30))
    ledger.append([annotation(4, 201, ["dog"], None)])
    assert observer.changed(3, NOW + dt.timedelta(seconds=30))
    observer.observe(3, NOW + dt.timedelta(seconds=40))
    assert not observer.changed(3, NOW + dt.timedelta(seconds=50))
    assert observer.changed(3, NOW + dt.timedelta(hours=14))


def test_memory_comes_from_the_decision_log(parts: Any) -> None:
    _, _, log, _, _ = parts
    assert memory_from_log(log, 3).predicted_labels is None
    log.append(Decision("preannotate", 3, "a", "x", {"checkpoint": "base", "labels": ["cat"]}), "done")
    log.append(Decision("rescore", 3, "b", "x", {"checkpoint": "base", "labels": ["cat", "zebra"]}), "failed")
    log.append(Decision("review", 3, "r", "x", {"flags": [{"task": 7}, {"task": 9}]}), "done")
    log.append(Decision("review", 3, "r2", "x", {"flags": [{"task": 8}]}), "pending")
    memory = memory_from_log(log, 3)
    assert memory.predicted_labels == ("cat",) and memory.predicted_checkpoint == "base"
    assert memory.flagged == frozenset({7, 9})


def test_a_missing_webhook_is_logged_at_a_full_look_at_most_every_full_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from backends.webhook_check import WebhookCheck, missing_webhook_error

    asked: list[int] = []

    def check(project: int) -> WebhookCheck:
        asked.append(project)
        return WebhookCheck(project, ("http://b:9090",), (), problem=missing_webhook_error(project, ["http://b:9090"]))

    reader, ledger, log = FakeReader(), open_ledger(None, home=tmp_path), open_decision_log(None, home=tmp_path)
    registry = Registry(tmp_path / "models", "spec:tiny")
    observer = Observer(
        reader, registry, ledger, FakeLocks(), log, models_dir=tmp_path / "models", full_check_s=600,  # type: ignore[arg-type]
        check_webhook=check,
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="agent.observe")
    try:
        observer.observe(3, NOW)
        observer.observe(3, NOW + dt.timedelta(seconds=60))  # within full_check_s: not asked again
        observer.observe(3, NOW + dt.timedelta(seconds=601))
    finally:
        ledger.close()
        log.close()

    assert asked == [3, 3]
    warnings = [r.getMessage() for r in caplog.records if "never reach the corrections ledger" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith("Project 3 has no webhook to http://b:9090/webhook")


def test_the_observation_carries_the_measured_saving_and_the_guard_events(tmp_path: Path, parts: Any) -> None:
    from state.effort_records import CountedAnnotation, GuardState, TagAnswer

    reader, ledger, log, _, observer = parts
    checkpoint = Registry(tmp_path / "models", "spec:tiny").base_version()
    obs = observer.observe(3, NOW)
    assert obs.saving is not None and obs.saving.tasks == 0 and obs.guard_events == ()

    answers = (TagAnswer("cat", True, True), TagAnswer("dog", True, False), TagAnswer("snow", False, True))
    ledger.effort.record(3, through=0, counted=[
        CountedAnnotation(1, 1, 1, 10, "parent", "older+abc", "platt", None, answers, "2026-03-01T00:00:00Z"),
    ])  # fmt: skip
    obs = observer.observe(3, NOW)
    assert obs.saving is not None and not obs.saving.in_service and obs.saving.tasks == 1  # earlier versions only
    ledger.effort.record(3, through=0, counted=[
        CountedAnnotation(2, 2, 2, 11, "parent", f"{checkpoint}+abc", "platt", None, answers[:1], "2026-03-02T00:00"),
    ])  # fmt: skip
    ledger.effort.set_guard(
        3, GuardState("dog", "tripped", checkpoint, reason="tripped: kept 0 of 20"), "tripped", 0, 20
    )
    assert observer.changed(3, NOW + dt.timedelta(seconds=5))  # a guard event is worth a look
    obs = observer.observe(3, NOW)
    assert obs.saving is not None and obs.saving.in_service and obs.saving.tasks == 1 and obs.saving.ratio == 0.0
    (note,) = obs.guard_events
    assert (note.tag, note.event) == ("dog", "tripped")

    log.append(Decision("guard", 3, f"guard:p3:e{note.seq}", "x", {"tag": "dog", "seq": note.seq}), "done")
    assert memory_from_log(log, 3).guard_seq == note.seq
    assert observer.observe(3, NOW).guard_events == ()  # logged already


def test_a_failed_round_is_in_the_observation_and_told_once_in_the_agents_log(
    tmp_path: Path, parts: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    _, _, _, _, observer = parts
    rounds = tmp_path / "models" / "rounds" / "3" / "rounds.jsonl"
    rounds.parent.mkdir(parents=True)
    failed = {"round_id": "r0002", "status": "failed", "trigger": "start_training", "current_version": "base",
              "reason": "Label names must not have leading or trailing spaces.",
              "started_at": "2026-03-04T08:00:00+00:00", "finished_at": "2026-03-04T08:01:00+00:00"}  # fmt: skip
    rounds.write_text(json.dumps(failed) + "\n")
    caplog.set_level(logging.WARNING, logger="agent.observe")

    obs = observer.observe(3, NOW)
    observer.observe(3, NOW + dt.timedelta(seconds=60))

    assert obs.last_round is not None and obs.last_round.status == "failed"
    assert obs.summary()["last_round"] == (
        "r0002 failed (start_training): Label names must not have leading or trailing spaces."
    )
    told = [r.getMessage() for r in caplog.records if "round r0002" in r.getMessage()]
    assert told == [
        "project 3: round r0002 (start_training) failed at 2026-03-04T08:01:00+00:00: "
        "Label names must not have leading or trailing spaces."
    ]


def test_a_refit_makes_the_unlabeled_tasks_predicted_under_the_old_calibration_unpredicted(
    tmp_path: Path, parts: Any
) -> None:
    import numpy as np

    from assistant.agent_policy import Policy
    from preannotation import fit_recalibration

    reader, ledger, log, _, observer = parts
    checkpoint = Registry(tmp_path / "models", "spec:tiny").base_version()
    version = parse_label_config(CONFIG).model_version(checkpoint)
    reader.tasks_ = [TaskRow(1, {"image": "a"}, labeled=False), TaskRow(2, {"image": "b"}, labeled=True)]
    reader.predictions_ = [scored(t, 10 + t, version, {"cat": 0.9, "dog": 0.1, "snow": 0.1}) for t in (1, 2)]
    obs = observer.observe(3, NOW)
    assert obs.calibration is None and obs.unpredicted == ()
    labels = ["cat", "dog", "snow"]
    log.append(Decision("preannotate", 3, "p", "x", {"checkpoint": checkpoint, "labels": labels}), "done")

    p = np.linspace(0.05, 0.95, 200)
    refit = ledger.effort.save_refit(
        3, checkpoint, recalibration=fit_recalibration(["cat"] * 200, p, p > 0.7), annotations=25, through_seq=25
    )
    assert observer.changed(3, NOW + dt.timedelta(seconds=5))  # a refit is worth a look
    obs = observer.observe(3, NOW + dt.timedelta(seconds=5))
    assert obs.calibration == refit.id and obs.unpredicted == (1,)  # the labeled task keeps its prediction
    repredict = [d for d in Policy().decide(obs) if d.action == "repredict"]
    assert len(repredict) == 1 and repredict[0].params["calibration"] == refit.id
    log.append(repredict[0], "done")
    assert memory_from_log(log, 3).predicted_calibration == refit.id

    # Once the task's prediction is replaced under the refit, nothing is left to re-predict.
    reader.predictions_[0].result[0]["assistant"]["recalibration"] = refit.id
    obs = observer.observe(3, NOW + dt.timedelta(seconds=10))
    assert obs.unpredicted == () and not [d for d in Policy().decide(obs) if d.action in ("repredict", "preannotate")]
