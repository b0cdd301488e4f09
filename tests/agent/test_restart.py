"""Killing the agent (SIGKILL, mid-action) and starting it again: no finished action repeats, no pending one is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.decision_log import open_decision_log
from tests.agent._fakes import write_world
from tests.conftest import REPO_ROOT


def _agent(directory: Path, block_on: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent._agent_proc", str(directory), block_on],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _actions(directory: Path) -> list[str]:
    path = directory / "actions.txt"
    return [line.split(":")[0] for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.parametrize("killed_in", ["preannotate", "select"])
def test_an_agent_killed_mid_action_resumes_it_and_repeats_nothing(tmp_path: Path, killed_in: str) -> None:
    write_world(tmp_path / "world.json")
    proc = _agent(tmp_path, killed_in)
    try:
        deadline = time.monotonic() + 60
        while f"start {killed_in}" not in _actions(tmp_path):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the agent never reached the action"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    log = open_decision_log(None, home=tmp_path)
    try:
        states = {r.decision.action: r.status for r in log.states(3)}
    finally:
        log.close()
    assert states[killed_in] == "pending"

    again = _agent(tmp_path, "-")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err.decode()
    third = _agent(tmp_path, "-")  # a third start finds nothing to do
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err.decode()

    expected = ["start preannotate", "end preannotate", "start select", "end select"]
    at = expected.index(f"start {killed_in}") + 1
    assert _actions(tmp_path) == [*expected[:at], f"start {killed_in}", *expected[at:]]
    log = open_decision_log(None, home=tmp_path)
    try:
        final = {r.decision.action: (r.status, r.attempt) for r in log.states(3)}
        rows = [(r.decision.action, r.status) for r in log.records(3)]
    finally:
        log.close()
    assert final == {"preannotate": ("done", 1), "select": ("done", 1)}
    assert rows.count((killed_in, "pending")) == 1 and rows.count((killed_in, "done")) == 1
