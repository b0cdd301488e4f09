"""Counting annotations against their predictions, refits and the guard (real ledger, fake Label Studio)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.effort import CountReport, EffortCounter, compare, count_projects
from backends.state import MemoryState
from state.ledger import Ledger, LedgerEvent, open_ledger
from state.registry import Registry
from state.settings import Settings
from studio.errors import LabelStudioError, LabelStudioUnavailable

CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple">
    <Choice value="cat"/><Choice value="dog"/><Choice value="sofa"/><Choice value="zebra"/>
  </Choices>
  <Choices name="mood" toName="image" model_skip="true"><Choice value="happy"/></Choices>
</View>"""
BASE_SPEC = "ViT-B-32:random-for-tests"
PROJECT = 3


@dataclass
class FakeStudio:
    """Label Studio's predictions and config; ``down`` makes every call fail like a dead server."""

    predictions: dict[int, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    calls: int = 0
    config: str = CONFIG

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise LabelStudioUnavailable("cannot reach Label Studio for GET prediction: ConnectError")

    def label_config(self, project: int) -> str:
        self._check()
        return self.config

    def prediction(self, prediction: int) -> dict[str, Any] | None:
        self._check()
        if prediction == 403:
            raise LabelStudioError("Label Studio answered 403 to GET prediction 403", status=403)
        return self.predictions.get(prediction)

    def task_predictions(self, task: int) -> list[dict[str, Any]]:
        self._check()
        return [p for p in self.predictions.values() if p["task"] == task]

    def add(self, pid: int, task: int, shown: list[str], scores: dict[str, float], version: str, **extras: Any) -> int:
        item = {
            "from_name": "tags",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": shown},
            "assistant": {"scores": scores, "novel": extras.pop("novel", []), "calibration": "platt", **extras},
        }
        created = extras.pop("created_at", f"2026-03-02T10:{pid % 60:02d}:00Z")
        self.predictions[pid] = {"id": pid, "task": task, "model_version": version, "result": [item],
                                 "created_at": created}  # fmt: skip
        return pid


def annotation(
    aid: int, task: int, chosen: list[str], *, parent: int | None, action: str = "ANNOTATION_CREATED", **kw: Any
) -> LedgerEvent:
    result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": chosen}}]
    return LedgerEvent.annotation(
        action, project=PROJECT, annotation_id=aid, task=task, result=result, parent_prediction=parent, **kw
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(None, home=tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def make_counter(ledger: Ledger, studio: FakeStudio, tmp_path: Path, **settings: Any) -> EffortCounter:
    cfg = Settings(home=tmp_path, base_model=BASE_SPEC, **settings)
    return EffortCounter(ledger, studio, Registry(cfg.models_dir, BASE_SPEC), cfg, batch=4)


def version(tmp_path: Path) -> str:
    return f"{Registry(tmp_path / 'models', BASE_SPEC).base_version()}+abcd1234"


def test_keeps_removes_and_adds_are_counted_against_the_parent_prediction(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio()
    v = version(tmp_path)
    studio.add(11, 1, ["cat", "dog"], {"cat": 0.9, "dog": 0.6, "sofa": 0.3, "zebra": 0.1}, v, novel=["zebra"])
    studio.add(12, 2, ["cat"], {"cat": 0.8, "dog": 0.2}, v)
    ledger.append([annotation(1, 1, ["cat", "sofa"], parent=11), annotation(2, 2, ["dog"], parent=12)])

    report = make_counter(ledger, studio, tmp_path).run(PROJECT)

    assert report.counted == 2 and report.through == ledger.watermark(PROJECT)
    tags = ledger.effort.tag_totals(PROJECT)
    assert {t: (x.effort.kept, x.effort.removed, x.effort.added) for t, x in tags.items()} == {
        "cat": (1, 1, 0),
        "dog": (0, 1, 1),
        "sofa": (0, 0, 1),
    }
    (row_1, row_2) = ledger.effort.page(PROJECT)
    assert (row_1.prediction_id, row_1.source, row_1.model_version, row_1.calibration) == (11, "parent", v, "platt")
    assert row_2.costlier  # 2 edits (remove cat, add dog) against 1 from scratch
    tags_, probabilities, answers = ledger.effort.pairs(PROJECT, v.partition("+")[0], limit=100)
    assert sorted(zip(tags_, probabilities, answers, strict=True)) == sorted(
        [("cat", 0.9, True), ("dog", 0.6, False), ("sofa", 0.3, True), ("zebra", 0.1, False),
         ("cat", 0.8, False), ("dog", 0.2, True)]
    )  # fmt: skip


def test_without_a_parent_the_latest_prediction_before_the_annotation_counts(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio()
    v = version(tmp_path)
    studio.add(21, 1, ["cat"], {"cat": 0.9}, v, created_at="2026-03-02T10:00:00Z")
    studio.add(22, 1, ["dog"], {"dog": 0.9}, v, created_at="2026-03-02T11:00:00Z")
    studio.add(23, 1, ["sofa"], {"sofa": 0.9}, v, created_at="2026-03-02T13:00:00Z")  # after the annotation
    ledger.append(
        [
            annotation(1, 1, ["dog"], parent=None, created_at="2026-03-02T12:00:00Z"),
            annotation(2, 1, ["dog"], parent=999, created_at="2026-03-02T12:30:00Z"),  # deleted in LS: 404
            annotation(3, 5, ["cat"], parent=None),  # a task without any prediction: labeled from scratch
            annotation(4, 1, [], parent=21, was_cancelled=True),  # skipped
            annotation(5, 1, ["dog"], parent=403),  # a prediction Label Studio refuses: that one only
        ]
    )
    report = make_counter(ledger, studio, tmp_path).run(PROJECT)

    assert report.counted == 2 and report.skipped == {"unpredicted": 1, "cancelled": 1, "failed": 1}
    rows = ledger.effort.page(PROJECT)
    assert [(r.annotation_id, r.prediction_id, r.source) for r in rows] == [(1, 22, "latest"), (2, 22, "latest")]
    assert ledger.effort.tag_totals(PROJECT)["dog"].effort.kept == 2
    assert ledger.effort.state(PROJECT).skipped == {"cancelled": 1, "unpredicted": 1, "failed": 1}


def test_an_update_replaces_and_a_deletion_removes_the_counts(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio()
    studio.add(11, 1, ["cat", "dog"], {"cat": 0.9, "dog": 0.6}, version(tmp_path))
    counter = make_counter(ledger, studio, tmp_path)
    ledger.append([annotation(1, 1, ["cat"], parent=11)])
    counter.run(PROJECT)
    ledger.append([annotation(1, 1, ["cat", "dog"], parent=11, action="ANNOTATION_UPDATED")])
    counter.run(PROJECT)
    tags = ledger.effort.tag_totals(PROJECT)
    assert (tags["cat"].effort.kept, tags["dog"].effort.kept, tags["dog"].effort.removed) == (1, 1, 0)
    ledger.append([LedgerEvent.annotation("ANNOTATIONS_DELETED", project=PROJECT, annotation_id=1)])
    counter.run(PROJECT)
    assert ledger.effort.tag_totals(PROJECT) == {} and ledger.effort.versions(PROJECT) == []


def test_label_studio_down_loses_nothing_and_is_visible_until_a_pass_goes_through(
    ledger: Ledger, tmp_path: Path
) -> None:
    studio = FakeStudio()
    studio.add(11, 1, ["cat"], {"cat": 0.9}, version(tmp_path))
    ledger.append([annotation(i, 1, ["cat"], parent=11) for i in range(1, 10)])  # 9 rows: 3 batches of 4
    counter = make_counter(ledger, studio, tmp_path)
    studio.down = True
    for attempt in (1, 2):
        with pytest.raises(LabelStudioUnavailable):
            counter.run(PROJECT)
        state = ledger.effort.state(PROJECT)
        assert state.failures == attempt and state.error is not None and "Cannot reach Label Studio" in state.error
        assert counter.pending(PROJECT) == 9 and state.counted_through == 0

    studio.down = False
    report = counter.run(PROJECT)
    assert report.counted == 9 and counter.pending(PROJECT) == 0
    state = ledger.effort.state(PROJECT)
    assert state.failures == 0 and state.error is None
    assert ledger.effort.tag_totals(PROJECT)["cat"].effort.kept == 9


def test_a_shift_in_the_served_probabilities_is_corrected_after_n_annotations(ledger: Ledger, tmp_path: Path) -> None:
    """The model serves 0.8 for tags that are true 30% of the time: the refit after N annotations pulls them down."""
    rng = np.random.default_rng(0)
    studio = FakeStudio()
    v = version(tmp_path)
    tags = ["cat", "dog", "sofa", "zebra"]
    events = []
    for i in range(1, 41):
        studio.add(100 + i, i, tags, dict.fromkeys(tags, 0.8), v)
        truth = [t for t in tags if rng.random() < 0.3]
        events.append(annotation(i, i, truth, parent=100 + i))
    counter = make_counter(ledger, studio, tmp_path, recalibration_every=20, guard_enabled=False)
    ledger.append(events[:19])
    counter.run(PROJECT)
    checkpoint = v.partition("+")[0]
    assert ledger.effort.last_refit(PROJECT, checkpoint) is None  # 19 < N

    ledger.append(events[19:])
    report = counter.run(PROJECT)
    refit = report.upkeep.refit
    assert refit is not None and refit.status == "fitted" and refit.annotations == 40
    assert refit.recalibration is not None and refit.answers == 160
    served = float(refit.recalibration.apply(np.array([0.8]), ["cat"])[0])
    truth = sum(t in e.result[0]["value"]["choices"] for e in events for t in tags) / 160  # type: ignore[index]
    # 160 answers against a prior worth 30: most of the way from 0.8 to the observed ~0.3.
    assert abs(served - truth) < 0.12 and served < 0.5
    assert ledger.effort.last_refit(PROJECT, checkpoint, fitted_only=True) == refit


def test_the_next_refit_fits_the_models_own_probabilities(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio()
    v = version(tmp_path)
    studio.add(11, 1, ["cat"], {"cat": 0.25}, v, model_scores={"cat": 0.8}, recalibration="r1")
    ledger.append([annotation(1, 1, ["cat"], parent=11)])
    make_counter(ledger, studio, tmp_path).run(PROJECT)
    _, probabilities, _ = ledger.effort.pairs(PROJECT, v.partition("+")[0], limit=10)
    assert probabilities == [0.8]  # the model's, not the refit's 0.25
    assert ledger.effort.page(PROJECT)[0].recalibration == "r1"


def test_a_failed_refit_is_stored_and_shown(ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import state.effort_upkeep as upkeep

    def boom(*_: Any, **__: Any) -> Any:
        raise FloatingPointError("the Newton steps diverged")

    monkeypatch.setattr(upkeep, "fit_recalibration", boom)
    studio = FakeStudio()
    studio.add(11, 1, ["cat"], {"cat": 0.7}, version(tmp_path))
    ledger.append([annotation(i, 1, ["cat"], parent=11) for i in range(1, 4)])
    report = make_counter(ledger, studio, tmp_path, recalibration_every=3).run(PROJECT)
    assert report.upkeep.refit is not None and report.upkeep.refit.status == "failed"
    assert "diverged" in (report.upkeep.refit.error or "")
    assert ledger.effort.refits(PROJECT)[0].status == "failed"


def _remove_dog(studio: FakeStudio, ledger: Ledger, v: str, first: int, n: int, keep_every: int = 0) -> None:
    events = []
    for i in range(first, first + n):
        studio.add(1000 + i, i, ["cat", "dog"], {"cat": 0.9, "dog": 0.7}, v)
        kept_dog = keep_every and i % keep_every == 0
        events.append(annotation(i, i, ["cat", "dog"] if kept_dog else ["cat"], parent=1000 + i))
    ledger.append(events)


def test_the_guard_trips_a_tag_removed_more_than_it_pays_and_resumes_under_a_new_model(
    ledger: Ledger, tmp_path: Path
) -> None:
    studio = FakeStudio()
    v = version(tmp_path)
    counter = make_counter(ledger, studio, tmp_path, guard_min_shown=10, recalibration_every=0)
    _remove_dog(studio, ledger, v, 1, 9)
    assert counter.run(PROJECT).upkeep.events == []  # 9 showings: too few to judge
    _remove_dog(studio, ledger, v, 10, 3)
    (event,) = counter.run(PROJECT).upkeep.events
    assert (event.tag, event.event, event.kept, event.removed) == ("dog", "tripped", 0, 12)
    assert "below the break-even 50%" in event.reason
    checkpoint = v.partition("+")[0]
    assert ledger.effort.suppressed(PROJECT, checkpoint) == {"dog"}
    assert counter.run(PROJECT).upkeep.events == []  # no event twice

    # A promotion: another checkpoint serves the project; the tag resumes and its counts restart.
    registry = counter.registry
    new = tmp_path / "new-ckpt"
    new.mkdir()
    (new / "sidecar.json").write_text('{"version": "mkt-p3-r0001"}')
    record = registry.register(new, parent=checkpoint, project=PROJECT, round_id="r0001")
    registry.promote(PROJECT, record.version)
    (resumed,) = counter.run(PROJECT).upkeep.events
    assert resumed.event == "resumed" and "mkt-p3-r0001" in resumed.reason
    assert ledger.effort.suppressed(PROJECT, record.version) == frozenset()
    assert ledger.effort.guard(PROJECT)["dog"].checkpoint == record.version


def test_the_guard_judges_a_tag_under_its_controls_costs(tmp_path: Path) -> None:
    # dog kept 10 of 20 showings: a keep rate of 50% (95% interval 30%-70%) pays at equal costs,
    # but not where the control says a remove costs three adds (break-even 75%).
    costly_removes = CONFIG.replace('choice="multiple">', 'choice="multiple" model_cost_remove="3">', 1)
    for config, tripped in ((CONFIG, False), (costly_removes, True)):
        own = open_ledger(None, home=tmp_path / f"ledger-{tripped}")
        try:
            studio = FakeStudio(config=config)
            v = version(tmp_path)
            counter = make_counter(own, studio, tmp_path, guard_min_shown=10, recalibration_every=0)
            _remove_dog(studio, own, v, 1, 20, keep_every=2)
            events = counter.run(PROJECT).upkeep.events
        finally:
            own.close()
        expected = [("dog", "tripped", 10, 10)] if tripped else []
        assert [(e.tag, e.event, e.kept, e.removed) for e in events] == expected
        assert all("below the break-even 75%" in e.reason for e in events)


def test_the_guard_waits_when_the_labeling_config_cannot_be_read(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio(config=CONFIG.replace('choice="multiple">', 'choice="multiple" model_cost_remove="3">', 1))
    v = version(tmp_path)
    counter = make_counter(ledger, studio, tmp_path, guard_min_shown=10, recalibration_every=0)
    _remove_dog(studio, ledger, v, 1, 20, keep_every=2)
    counter._count(PROJECT, CountReport(PROJECT))  # counted while Label Studio answered
    studio.down = True
    assert counter.run(PROJECT).upkeep.events == []  # not judged under the project's costs instead
    assert ledger.effort.suppressed(PROJECT, v.partition("+")[0]) == frozenset()
    studio.down = False
    (event,) = counter.run(PROJECT).upkeep.events
    assert (event.tag, event.event) == ("dog", "tripped")


def test_a_tripped_tag_resumes_when_a_refit_predicts_it_better(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio()
    v = version(tmp_path)
    counter = make_counter(ledger, studio, tmp_path, guard_min_shown=10, recalibration_every=1000)
    _remove_dog(studio, ledger, v, 1, 12, keep_every=6)  # dog kept 2 of 12 at p = 0.7
    (tripped,) = counter.run(PROJECT).upkeep.events
    assert tripped.event == "tripped"
    # The next refit (every 12 annotations now) learns dog's 0.7 means ~0.2 here: it predicts the
    # showings that tripped it better, so the tag may be shown again when the rule says so.
    counter.settings = counter.settings.model_copy(update={"recalibration_every": 12})
    _remove_dog(studio, ledger, v, 13, 1)
    report = counter.run(PROJECT)
    assert report.upkeep.refit is not None and report.upkeep.refit.status == "fitted"
    (resumed,) = report.upkeep.events
    assert resumed.event == "resumed" and f"refit {report.upkeep.refit.id}" in resumed.reason
    assert "Brier" in resumed.reason
    assert ledger.effort.suppressed(PROJECT, v.partition("+")[0]) == frozenset()


def test_compare_reads_only_active_controls_and_marks_novel_tags(ledger: Ledger) -> None:
    from studio.config import parse_label_config

    ledger.append(
        [annotation(1, 1, ["zebra"], parent=7)]
        + [
            LedgerEvent.annotation(
                "ANNOTATION_CREATED",
                project=PROJECT,
                annotation_id=2,
                task=1,
                result=[{"from_name": "mood", "to_name": "image", "type": "choices", "value": {"choices": ["happy"]}}],
            )
        ]
    )
    entries = ledger.entries(PROJECT)
    prediction = {
        "id": 7,
        "model_version": "m+f",
        "result": [
            {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["zebra"]},
             "assistant": {"scores": {"zebra": 0.6}, "novel": ["zebra"]}},
            {"from_name": "mood", "to_name": "image", "type": "choices", "value": {"choices": ["happy"]}},
            {"from_name": "tags", "value": "not an item Label Studio would send"},
        ],
    }  # fmt: skip
    vocab = parse_label_config(CONFIG)
    first = compare(vocab, entries[0], prediction, "parent")
    assert [(a.tag, a.shown, a.present, a.novel, a.model_p) for a in first.answers] == [
        ("zebra", True, True, True, 0.6)
    ]
    second = compare(vocab, entries[1], prediction, "parent")  # mood is skipped by the model: not counted
    assert [(a.tag, a.shown, a.present) for a in second.answers] == [("zebra", True, False)]


def test_one_pass_per_project_at_a_time(ledger: Ledger, tmp_path: Path) -> None:
    studio = FakeStudio()
    studio.add(11, 1, ["cat"], {"cat": 0.9}, version(tmp_path))
    ledger.append([annotation(1, 1, ["cat"], parent=11)])
    counter = make_counter(ledger, studio, tmp_path)
    state = MemoryState()
    assert state.acquire_lock(f"effort:{PROJECT}", "someone-else", 60)
    reports, errors = count_projects(counter, state, [PROJECT], "me")
    assert reports == [] and errors == {} and counter.pending(PROJECT) == 1  # left to the holder
    state.release_lock(f"effort:{PROJECT}", "someone-else")
    reports, errors = count_projects(counter, state, [PROJECT], "me")
    assert [r.counted for r in reports] == [1] and counter.pending(PROJECT) == 0
    studio.down = True
    ledger.append([annotation(2, 1, ["cat"], parent=11)])
    _, errors = count_projects(counter, state, [PROJECT], "me")
    assert isinstance(errors[PROJECT], LabelStudioUnavailable) and state.acquire_lock(f"effort:{PROJECT}", "x", 1)
