"""The dashboard's data access: the background reader, the round log's cache, the agent lock's key."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from dashboard.data import Refreshed, RoundLog


def _wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_refreshed_never_blocks_a_reader():
    gate = threading.Event()

    def read() -> dict[str, list[str]]:
        gate.wait(5)
        return {"predict": ["w1"]}

    cached = Refreshed(read, ttl_s=60.0)
    start = time.monotonic()
    assert cached.get() == (None, None, None)  # the first read runs in the background
    assert time.monotonic() - start < 0.5
    gate.set()
    _wait(lambda: cached.get()[0] is not None)
    value, age, error = cached.get()
    assert value == {"predict": ["w1"]} and age is not None and age < 60 and error is None


def test_refreshed_keeps_the_last_value_when_a_read_fails():
    answers: list[object] = [{"predict": ["w1"]}, RuntimeError("broker down")]

    def read() -> dict[str, list[str]]:
        answer = answers.pop(0) if answers else RuntimeError("broker down")
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    cached = Refreshed(read, ttl_s=0.0)  # every get starts another read
    cached.get()
    _wait(lambda: cached.get()[2] is not None)
    value, _, error = cached.get()
    assert value == {"predict": ["w1"]} and error == "RuntimeError: broker down"


def test_the_round_log_is_parsed_again_only_when_it_changed(tmp_path: Path):
    log = RoundLog(tmp_path)
    assert log.entries(3) == []
    path = log.path(3)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"round_id": "r0001"}) + "\n{torn", encoding="utf-8")
    first = log.entries(3)
    assert [e["round_id"] for e in first] == ["r0001"]
    assert log.entries(3) is first  # unchanged file: the cached list
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"round_id": "r0002"}) + "\n")
    assert [e["round_id"] for e in log.entries(3)] == ["r0001", "r0002"]
