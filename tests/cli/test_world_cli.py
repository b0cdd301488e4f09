"""`assistant world calibrate` and the prior `world pretrain` writes, on tiny models and worlds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from assistant.calibration import Calibrator
from assistant.checkpoint import PRIOR_FILE, load_model
from assistant.factory import create_backbone
from benchworld.world import build_world, load_split
from benchworld.world.config import SplitSizes
from benchworld.world.pretrain import save_open_clip_dir
from cli.main import app
from state.settings import get_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose quick world is tiny (24 validation images), so `--quick` takes seconds."""
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    build_world(tmp_path / "home" / "world" / "world-v2" / "quick", sizes=SplitSizes(train=4, val=24, test=24))
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_world_calibrate_writes_the_prior_and_load_model_uses_it(home: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_open_clip_dir(create_backbone("test-tiny", allow_random=True), "test-tiny", tmp_path / "m", {})
    assert load_model(model).calibrator.method == "default"

    result = CliRunner().invoke(app, ["world", "calibrate", "--model", str(model), "--quick"])
    assert result.exit_code == 0, result.output
    assert "calibration prior" in result.output and "threshold" in result.output

    prior = Calibrator.from_dict(json.loads((model / PRIOR_FILE).read_text()))
    assert prior.method == "prior" and dict(prior.labels) == {}
    assert load_model(f"local-dir:{model}").calibrator == prior
    recorded = json.loads((model / "manifest.json").read_text())["calibration_prior"]
    val = load_split(home / "world" / "world-v2" / "quick" / "val.npz")
    assert recorded["data"]["data_hash"] == val.data_hash and recorded["data"]["split"] == "val"
    assert recorded["threshold"] == prior.threshold and recorded["images"] == 24 and recorded["labels"] == 49


def test_world_calibrate_refuses_a_hub_name(home: Path) -> None:
    result = CliRunner().invoke(app, ["world", "calibrate", "--model", "ViT-B-16", "--quick"])
    assert result.exit_code == 1 and "not a local model directory" in result.output


def test_world_pretrain_ends_with_the_prior(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "pretrained"
    args = ["world", "pretrain", "--out", str(out), "--steps", "1", "--batch-size", "4", "--quick-eval"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration_prior"]["data"]["world"] == "quick"
    assert load_model(out).calibrator.method == "prior"


def test_world_reliability_reports_ece_and_draws_the_diagram(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_open_clip_dir(create_backbone("test-tiny", allow_random=True), "test-tiny", tmp_path / "m", {})
    out = tmp_path / "reliability"
    args = ["world", "reliability", "--model", str(model), "--images", "12", "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ECE" in result.output and "edits/scratch" in result.output
    doc = json.loads((out / "reliability.json").read_text())
    assert doc["data"] == {"stream": "val", "first": 2000, "images": 12, "world": "world-v2"}  # the default world
    seen, unseen = doc["groups"]["seen"], doc["groups"]["unseen"]
    assert seen["count"] == 12 * 49 and unseen["count"] == 12 * 16
    assert 0.0 <= seen["ece"] <= 1.0 and sum(b["count"] for b in seen["bins"]) == seen["count"]
    assert seen["rule"]["tasks"] == 12 and doc["calibrator"] == "default"
    assert (out / "reliability.png").stat().st_size > 1000


def test_world_stats_prints_the_targets_and_fails_a_world_that_misses_them(tmp_path: Path) -> None:
    # World v1 has no photo series, so it misses the burst-share target (and says which).
    out = tmp_path / "stats.json"
    result = CliRunner().invoke(app, ["world", "stats", "--world", "world-v1", "--images", "200", "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "missed" in result.output and "burst_share" in result.output
    doc = json.loads(out.read_text())
    assert doc["version"] == "world-v1" and doc["values"]["burst_share"] < 0.1
    assert doc["targets"]["slope_ranks_1_50"]["target"] == pytest.approx(-0.571)


def test_world_stats_refuses_an_unknown_world() -> None:
    result = CliRunner().invoke(app, ["world", "stats", "--world", "world-v9"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Unknown world version") and "world-v1, world-v2" in result.output
