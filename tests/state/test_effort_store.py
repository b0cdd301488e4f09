"""The effort ledger's store, on SQLite and on the real PostgreSQL (skipped with the reason when unreachable)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from preannotation import LogitMap, Recalibration
from state.effort_records import CountedAnnotation, GuardState, TagAnswer, checkpoint_of
from state.ledger import Ledger
from tests.sql import ledger_on

V1 = "mkt-a+1111aaaa"
V2 = "mkt-b+2222bbbb"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_on(request.param, tmp_path) as opened:
        yield opened


def counted(
    annotation: int,
    *,
    shown: tuple[str, ...],
    final: tuple[str, ...],
    version: str = V1,
    scores: dict[str, float] | None = None,
    novel: frozenset[str] = frozenset(),
    seq: int = 1,
    at: str | None = None,
) -> CountedAnnotation:
    scores = scores or {}
    tags = sorted(set(shown) | set(final) | set(scores))
    answers = tuple(TagAnswer(t, t in shown, t in final, t in novel, scores.get(t), scores.get(t)) for t in tags)
    return CountedAnnotation(annotation, 100 + annotation, seq, 900 + annotation, "parent", version, "platt", None,
                             answers, at)  # fmt: skip


def test_counts_per_tag_version_and_task_add_up(ledger: Ledger) -> None:
    store = ledger.effort
    store.record(
        3,
        through=7,
        counted=[
            counted(1, shown=("cat", "dog"), final=("cat", "sofa")),  # cat kept, dog removed, sofa added
            counted(2, shown=("cat",), final=("cat",)),
            counted(3, shown=("dog", "zebra"), final=(), novel=frozenset({"zebra"})),  # costlier than scratch (0)
        ],
        skipped={"cancelled": 1},
    )
    tags = store.tag_totals(3)
    assert {t: (v.effort.kept, v.effort.removed, v.effort.added) for t, v in tags.items()} == {
        "cat": (2, 0, 0),
        "dog": (0, 2, 0),
        "sofa": (0, 0, 1),
        "zebra": (0, 1, 0),
    }
    assert tags["zebra"].novel and not tags["cat"].novel
    (version,) = store.versions(3)
    assert version.model_version == V1 and version.checkpoint == "mkt-a"
    assert (version.totals.tasks, version.totals.kept, version.totals.removed, version.totals.added) == (3, 2, 3, 1)
    assert version.totals.costlier_tasks == 1  # task 3: 2 removes against 0 from scratch
    state = store.state(3)
    assert state.counted_through == 7 and state.counted == 3 and state.skipped["cancelled"] == 1
    assert store.tag_totals(4) == {} and store.state(4).counted_through == 0


def test_a_recount_replaces_and_a_deletion_removes_an_annotations_counts(ledger: Ledger) -> None:
    store = ledger.effort
    store.record(3, through=1, counted=[counted(1, shown=("cat", "dog"), final=("cat",))])
    store.record(3, through=2, counted=[counted(1, shown=("cat", "dog"), final=("cat", "dog"))])  # an update
    tags = store.tag_totals(3)
    assert (tags["cat"].effort.kept, tags["dog"].effort.kept, tags["dog"].effort.removed) == (1, 1, 0)
    assert store.versions(3)[0].totals.tasks == 1

    store.record(3, through=3, deleted=[1])
    assert store.tag_totals(3) == {} and store.versions(3) == []
    assert store.page(3) == [] and store.state(3).counted_through == 3


def test_the_cursor_only_moves_forward_and_a_failure_is_kept_until_a_pass_goes_through(ledger: Ledger) -> None:
    store = ledger.effort
    store.record(3, through=10)
    store.record(3, through=4)  # an older pass finishing late never moves the cursor back
    assert store.state(3).counted_through == 10
    state = store.note_failure(3, "cannot reach Label Studio for GET prediction 9: ConnectError")
    state = store.note_failure(3, "cannot reach Label Studio for GET prediction 9: ConnectError")
    assert state.failures == 2 and state.error is not None and "ConnectError" in state.error and state.error_at
    assert state.counted_through == 10
    store.record(3, through=11)
    assert store.state(3).failures == 0 and store.state(3).error is None


def test_pages_are_keyset_and_pairs_and_showings_come_back(ledger: Ledger) -> None:
    store = ledger.effort
    batch = [
        counted(i, shown=("cat",), final=("cat",) if i % 2 else (), scores={"cat": 0.7, "dog": 0.2})
        for i in range(1, 8)
    ]
    store.record(3, through=7, counted=batch)
    first = store.page(3, limit=3)
    second = store.page(3, after=first[-1].seq, limit=10)
    assert [r.annotation_id for r in first + second] == list(range(1, 8))
    tags, probabilities, answers = store.pairs(3, "mkt-a", limit=100)
    assert len(tags) == 14 and set(tags) == {"cat", "dog"}
    assert probabilities.count(0.7) == 7 and answers.count(True) == 4
    served, model, kept, last = store.tag_showings(3, "mkt-a", "cat")
    assert len(served) == 7 and kept.count(True) == 4 and last > 0
    assert store.tag_showings(3, "mkt-a", "cat", after_seq=last)[0] == []
    assert store.annotations(3, checkpoint="mkt-a") == (7, second[-1].seq)


def test_refits_guard_and_served_calibration_are_durable(ledger: Ledger) -> None:
    store = ledger.effort
    recal = Recalibration(LogitMap(0.8, -1.2, 40), {"cat": LogitMap(1.1, -0.3, 25)}, "mkt-a", 40)
    fitted = store.save_refit(3, "mkt-a", recalibration=recal, annotations=5, through_seq=9)
    failed = store.save_refit(3, "mkt-a", recalibration=None, annotations=6, through_seq=12, error="boom")
    assert store.last_refit(3, "mkt-a") == failed and failed.status == "failed"
    good = store.last_refit(3, "mkt-a", fitted_only=True)
    assert good is not None and good.id == fitted.id and good.recalibration == recal
    assert store.last_refit(3, "mkt-b") is None

    store.set_guard(3, GuardState("dog", "tripped", "mkt-a", reason="tripped: kept 2 of 20"), "tripped", 2, 18)
    assert store.suppressed(3, "mkt-a") == {"dog"} and store.suppressed(3, "mkt-b") == frozenset()
    (event,) = store.guard_events(3)
    assert (event.tag, event.event, event.kept, event.removed) == ("dog", "tripped", 2, 18)
    assert store.last_guard_event(3) == event.seq and store.guard_events(3, after=event.seq) == []

    store.note_serving(3, "mkt-a", "default")
    store.note_serving(3, "mkt-a", "platt")  # the first report wins
    assert store.serving(3, "mkt-a") == "default" and store.serving(3, "mkt-b") is None


def test_checkpoint_is_the_part_before_the_fingerprint() -> None:
    assert checkpoint_of("mkt-p3-r0007+a1b2c3d4") == "mkt-p3-r0007" and checkpoint_of("base") == "base"
