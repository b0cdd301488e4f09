"""`assistant models …`, `assistant round …` and `assistant simulate rounds` through CliRunner."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from state.registry import Registry
from state.settings import get_settings
from tests.workers._helpers import save_tiny_checkpoint

REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-ckpt")
    return save_tiny_checkpoint(root / "base", "tiny-base"), save_tiny_checkpoint(root / "r1", "mkt-p3-r0001", seed=1)


@pytest.fixture
def home(tmp_path: Path, checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base, _ = checkpoints
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSISTANT_BASE_MODEL", str(base))
    monkeypatch.setenv("ASSISTANT_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("ASSISTANT_REDIS_KEY_PREFIX", f"assistant-test-{uuid.uuid4().hex[:10]}:")
    monkeypatch.setenv("ASSISTANT_LABEL_STUDIO_API_KEY", "")
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_models_list_promote_and_rollback(home: Path, checkpoints: tuple[Path, Path]) -> None:
    base, round1 = checkpoints
    registry = Registry(home / "models", str(base))
    registry.register(round1, parent="tiny-base", project=3, round_id="r0001", metrics={"mAP": 41.5, "delta_mAP": 2.0})
    runner = CliRunner()

    listed = runner.invoke(app, ["models", "list", "--project", "3", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["version"]: r for r in json.loads(listed.output)}
    assert rows["tiny-base"]["current"] and rows["tiny-base"]["is_base"]
    assert rows["mkt-p3-r0001"]["parent"] == "tiny-base" and rows["mkt-p3-r0001"]["metrics"]["mAP"] == 41.5

    promoted = runner.invoke(app, ["models", "promote", "mkt-p3-r0001", "--project", "3"])
    assert promoted.exit_code == 0 and "tiny-base -> mkt-p3-r0001" in promoted.output
    assert registry.current(3).version == "mkt-p3-r0001"
    table = runner.invoke(app, ["models", "list", "--project", "3"], env={"COLUMNS": "200"})
    assert "▶" in table.output and "41.5" in table.output

    rolled = runner.invoke(app, ["models", "rollback", "--project", "3"])
    assert rolled.exit_code == 0 and "to tiny-base" in rolled.output
    again = runner.invoke(app, ["models", "rollback", "--project", "3"])
    assert again.exit_code == 1 and "nothing to roll back" in again.output
    unknown = runner.invoke(app, ["models", "promote", "nope", "--project", "3"])
    assert unknown.exit_code == 1 and "not in the registry" in unknown.output


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")


@pytest.mark.integration
def test_round_status_and_a_round_without_label_studio_credentials(home: Path) -> None:
    _redis_or_skip()
    runner = CliRunner()
    status = runner.invoke(app, ["round", "status", "--project", "3", "--json"])
    assert status.exit_code == 0, status.output
    (entry,) = json.loads(status.output)
    assert entry["project"] == 3 and entry["current"] == "tiny-base" and entry["lock"] is None
    assert entry["new_corrections"] == 0 and entry["threshold"] == 50 and entry["rounds"] == []

    failed = runner.invoke(app, ["round", "run", "--project", "3"], env={"COLUMNS": "200"})
    assert failed.exit_code == 1 and "No Label Studio API key" in failed.output
    bad = runner.invoke(app, ["round", "run", "--project", "3", "--stages", "stage3"])
    assert bad.exit_code == 1 and "unknown stages" in bad.output
    # The failed round released the project's lock on its way out, and is listed with its reason.
    status = runner.invoke(app, ["round", "status", "--project", "3", "--json"])
    (entry,) = json.loads(status.output)
    assert entry["lock"] is None
    (failed_round,) = entry["rounds"]
    assert failed_round["status"] == "failed" and failed_round["round_id"] == "r0001"
    assert "No Label Studio API key" in failed_round["reason"] and failed_round["attempted_version"] == "mkt-p3-r0001"
    assert failed_round["finished_at"] and failed_round["trigger"] == "manual"
    table = runner.invoke(app, ["round", "status", "--project", "3"], env={"COLUMNS": "200"})
    assert "Round r0001 failed" in table.output and "No Label Studio API key" in table.output


def test_simulate_rounds_prints_the_table_and_writes_the_plot(tmp_path: Path, checkpoints) -> None:
    base, _ = checkpoints
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        [
            "simulate", "rounds", "--base-model", str(base), "--rounds", "2", "--images-per-round", "20",
            "--test-images", "16", "--epochs", "1", "--initial", "red,green,blue,grass,water,sky",
            "--novel", "snow", "--out", str(out),
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "test seen" in result.output and "snow: random" in result.output
    assert (out / "simulation.png").stat().st_size > 0
    doc = json.loads((out / "simulation.json").read_text())
    assert [r["round"] for r in doc["rows"]] == [0, 1, 2] and doc["violations"] == []
    shutil.rmtree(out)


def test_simulate_rounds_without_a_world_model_says_how_to_fix_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "rounds", "--base-model", str(tmp_path / "world-tiny")])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "world-tiny" in output and "Fix:" in output and "model directory" in output
