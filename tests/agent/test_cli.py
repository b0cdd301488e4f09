"""`assistant agent …` commands, and the agent's place in the images (no model packages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.decision_log import open_decision_log
from assistant.agent_policy import Decision
from cli.main import app
from tests.conftest import REPO_ROOT


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from agent.settings import get_agent_settings

    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path))
    monkeypatch.setenv("ASSISTANT_AGENT_BATCH_SIZE", "42")
    get_agent_settings.cache_clear()
    yield tmp_path
    get_agent_settings.cache_clear()


def test_the_agent_runs_in_the_backend_image_without_the_model_packages() -> None:
    modules = ["cli.agent", "agent.loop", "agent.execute", "agent.observe", "agent.services", "agent.report"]
    code = f"import json, sys\nfor m in {modules!r}: __import__(m)\nprint(json.dumps(sorted(sys.modules)))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    heavy = {"torch", "torchvision", "open_clip", "transformers", "safetensors", "matplotlib"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_policy_log_and_health(home: Path) -> None:
    runner = CliRunner()
    policy = runner.invoke(app, ["agent", "policy", "--json"])
    assert policy.exit_code == 0, policy.output
    assert json.loads(policy.output)["batch_size"] == 42

    empty = runner.invoke(app, ["agent", "log"])
    assert empty.exit_code == 0 and "decided nothing yet" in empty.output
    log = open_decision_log(None, home=home)
    d = Decision("preannotate", 3, "k1", "24 unlabeled tasks have no prediction", {"labels": ["cat"]})
    log.append(d, "pending")
    log.append(d, "done", {"posted": 24, "model_version": "base+abcd"})
    log.close()
    story = runner.invoke(app, ["agent", "log", "--project", "3"])
    assert story.exit_code == 0
    assert "preannotate done     24 unlabeled tasks have no prediction -> posted 24 with base+abcd" in story.output
    rows = runner.invoke(app, ["agent", "log", "--rows", "--json"])
    assert [r["status"] for r in json.loads(rows.output)] == ["pending", "done"]

    assert runner.invoke(app, ["agent", "health"]).exit_code == 1
    (home / "agent-alive").touch()
    assert runner.invoke(app, ["agent", "health"]).exit_code == 0
    os.utime(home / "agent-alive", (0, 0))
    sick = runner.invoke(app, ["agent", "health", "--max-age", "60"])
    assert sick.exit_code == 1 and "last sign of life" in sick.output
