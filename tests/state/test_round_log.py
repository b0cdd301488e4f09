"""The round log: the one reader and writer of ``rounds.jsonl``, and the backend's gauge over it."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from state.round_log import append_round_log, read_round_log, round_log_path, round_statuses
from tests.backends._app_fakes import make_harness


def test_lines_round_trip_and_torn_or_odd_lines_are_skipped(tmp_path: Path) -> None:
    append_round_log(tmp_path, 3, {"round_id": "r0001", "status": "promoted"})
    path = round_log_path(tmp_path, 3)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"round_id": "r00\n[1, 2]\n\n')  # a torn write, a line that is no object, a blank one
    append_round_log(tmp_path, 3, {"round_id": "r0002", "status": "failed", "reason": "boom"})

    assert path == tmp_path / "rounds" / "3" / "rounds.jsonl"
    assert [r["round_id"] for r in read_round_log(tmp_path, 3)] == ["r0001", "r0002"]
    assert read_round_log(tmp_path, 4) == []


def test_statuses_are_counted_per_project(tmp_path: Path) -> None:
    for project, status in ((3, "failed"), (3, "promoted"), (3, "failed"), (5, "skipped")):
        append_round_log(tmp_path, project, {"status": status})
    (tmp_path / "rounds" / "notes").mkdir()  # not a project folder

    counts = round_statuses(tmp_path)

    assert {p: dict(c) for p, c in counts.items()} == {3: {"failed": 2, "promoted": 1}, 5: {"skipped": 1}}
    assert round_statuses(tmp_path / "absent") == {}


def test_the_backend_exports_failed_rounds_as_a_gauge(tmp_path: Path) -> None:
    harness = make_harness(tmp_path)
    entry = {"round_id": "r0001", "status": "failed", "reason": "Label names must not have trailing spaces."}
    append_round_log(harness.settings.models_dir, 3, entry)
    append_round_log(harness.settings.models_dir, 3, {"round_id": "r0002", "status": "kept"})

    with TestClient(harness.app) as client:
        text = client.get("/metrics").text

    assert 'assistant_project_rounds{project="3",status="failed"} 1.0' in text
    assert 'assistant_project_rounds{project="3",status="kept"} 1.0' in text
    assert json.loads(round_log_path(harness.settings.models_dir, 3).read_text().splitlines()[0]) == entry
