"""The corrections ledger on SQLite and on the real PostgreSQL (skipped with the reason when unreachable)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from state.ledger import LEDGER_FILE, Ledger, LedgerError, LedgerEvent, open_ledger
from tests.sql import ledger_on


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_on(request.param, tmp_path) as opened:
        yield opened


def created(annotation_id: int, *, project: int = 3, choices: tuple[str, ...] = ("cat",), **kw: object) -> LedgerEvent:
    result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": list(choices)}}]
    return LedgerEvent.annotation(
        str(kw.pop("action", "ANNOTATION_CREATED")),
        project=project,
        annotation_id=annotation_id,
        task=annotation_id + 100,
        result=result,
        parent_prediction=7,
        completed_by=1,
        created_at="2026-01-01T00:00:00Z",
    )


def test_append_round_trips_every_field(ledger: Ledger) -> None:
    event = created(55, choices=("cat", "ünïcödé"))

    assert ledger.append([event]) == 1
    (entry,) = ledger.entries(3)

    assert entry.event == event
    assert entry.seq >= 1 and entry.received_at
    assert entry.event.result is not None and entry.event.result[0]["value"]["choices"] == ["cat", "ünïcödé"]
    assert not entry.deleted


def test_the_same_event_is_stored_once_and_an_edit_is_a_new_row(ledger: Ledger) -> None:
    first = created(55)
    assert ledger.append([first, first]) == 1
    assert ledger.append([first]) == 0

    edited = created(55, choices=("dog",), action="ANNOTATION_UPDATED")
    assert edited.event_id != first.event_id
    assert ledger.append([edited]) == 1
    assert [e.event.action for e in ledger.entries(3)] == ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]


def test_counts_and_lists_since_a_watermark_per_project(ledger: Ledger) -> None:
    ledger.append([created(1), created(2), created(3, project=4)])
    mark = ledger.watermark(3)
    ledger.append([created(5), created(6, project=4)])

    assert ledger.count(3) == 3
    assert ledger.count(3, since=mark) == 1
    assert [e.event.annotation_id for e in ledger.entries(3, since=mark)] == [5]
    assert ledger.count(4) == 2
    assert ledger.watermark(99) == 0 and ledger.count(99) == 0
    assert len(ledger.entries(3, limit=2)) == 2


def test_rounds_move_the_watermark(ledger: Ledger) -> None:
    ledger.append([created(1), created(2)])
    assert ledger.last_round(3) is None
    assert ledger.count_since_last_round(3) == 2

    mark = ledger.record_round(3, "round-1", ledger.watermark(3))
    assert ledger.last_round(3) == mark
    assert ledger.count_since_last_round(3) == 0

    ledger.append([created(3)])
    assert ledger.count_since_last_round(3) == 1
    assert [e.event.annotation_id for e in ledger.entries_since_last_round(3)] == [3]
    # Recording the same round again keeps the first mark.
    again = ledger.record_round(3, "round-1", ledger.watermark(3))
    assert again.watermark == mark.watermark
    assert ledger.last_round(4) is None


def test_current_annotations_fold_revisions_and_deletions(ledger: Ledger) -> None:
    ledger.append([created(1), created(2), created(1, choices=("dog",), action="ANNOTATION_UPDATED")])
    ledger.append([LedgerEvent.annotation("ANNOTATIONS_DELETED", project=3, annotation_id=2)])

    current = ledger.current_annotations(3)

    assert sorted(current) == [1]
    result = current[1].event.result
    assert result is not None and result[0]["value"]["choices"] == ["dog"]
    deleted = ledger.entries(3)[-1]
    assert deleted.deleted and deleted.event.task is None and deleted.event.result is None


def test_concurrent_appends_lose_nothing(ledger: Ledger) -> None:
    def append(offset: int) -> None:
        for i in range(10):
            ledger.append([created(offset + i)])

    threads = [threading.Thread(target=append, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert ledger.count(3) == 40
    seqs = [e.seq for e in ledger.entries(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 40


def test_sqlite_file_lives_under_home_and_is_readable_by_another_process(tmp_path: Path) -> None:
    ledger = open_ledger(None, home=tmp_path / "home")
    ledger.append([created(1)])
    ledger.close()

    with sqlite3.connect(tmp_path / "home" / LEDGER_FILE) as conn:
        rows = conn.execute("SELECT action, result FROM assistant_corrections").fetchall()
    assert rows[0][0] == "ANNOTATION_CREATED" and json.loads(rows[0][1])[0]["from_name"] == "tags"

    reopened = open_ledger(f"sqlite:///{tmp_path / 'home' / LEDGER_FILE}")
    assert reopened.count(3) == 1
    reopened.close()


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("mysql://x", {}, "Unsupported ledger URL"),
        (None, {}, "No ledger URL and no home"),
        (None, {"table_prefix": "Bad-Prefix"}, "Invalid ledger table prefix"),
    ],
)
def test_bad_configuration_says_what_to_fix(url: str | None, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(LedgerError, match=match):
        open_ledger(url, **kwargs)  # type: ignore[arg-type]


def test_unreachable_postgres_fails_clearly_without_the_password() -> None:
    with pytest.raises(LedgerError) as info:
        open_ledger("postgresql://user:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
