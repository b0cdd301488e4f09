"""What serves a project: the offline demo model or a real one, and its calibration state (from files only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from state.model_info import calibration_state, is_demo_model, model_directory, served_model
from state.registry import Registry
from state.settings import BUNDLED_MODEL_DIR
from tests.workers._helpers import save_tiny_checkpoint


def test_the_bundled_model_is_the_demo_model_under_every_spelling(tmp_path: Path) -> None:
    assert is_demo_model(str(BUNDLED_MODEL_DIR))
    assert is_demo_model(f"local-dir:{BUNDLED_MODEL_DIR}")
    assert not is_demo_model("ViT-B-16:laion2b_s34b_b88k")
    assert not is_demo_model(str(tmp_path / "missing"))
    # Any model pretrained on the synthetic world says so in its manifest.
    world = tmp_path / "my-world-model"
    world.mkdir()
    (world / "manifest.json").write_text(json.dumps({"generator_version": "world-v1"}))
    assert is_demo_model(f"local-dir:{world}")
    real = tmp_path / "real"
    real.mkdir()
    (real / "manifest.json").write_text(json.dumps({"architecture": "ViT-B-16"}))
    assert not is_demo_model(str(real))
    assert model_directory(f"hf:{real}") == real


def test_calibration_states_default_prior_and_platt(tmp_path: Path) -> None:
    bundled = Registry(tmp_path / "a", str(BUNDLED_MODEL_DIR))
    assert calibration_state(bundled.base_record()) == "prior"  # assets/world-tiny/calibration.json
    spec = Registry(tmp_path / "b", "ViT-B-16:laion2b_s34b_b88k")
    assert calibration_state(spec.base_record()) == "default"
    bare = tmp_path / "bare"
    shutil.copytree(BUNDLED_MODEL_DIR, bare)
    (bare / "calibration.json").unlink()
    assert calibration_state(Registry(tmp_path / "c", str(bare)).base_record()) == "default"

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", "tiny-v1")  # saved with method "default"
    registry = Registry(tmp_path / "models", str(checkpoint))
    assert calibration_state(registry.base_record()) == "default"
    sidecar = checkpoint / "sidecar.json"
    doc = json.loads(sidecar.read_text())
    doc["calibration"]["method"] = "platt"
    sidecar.write_text(json.dumps(doc))
    assert calibration_state(registry.base_record()) == "platt"


def test_served_model_follows_the_projects_pointer_and_lineage(tmp_path: Path) -> None:
    base = save_tiny_checkpoint(tmp_path / "base", "tiny-base")
    registry = Registry(tmp_path / "models", str(base))
    served = served_model(registry, 3)
    assert served.version == "tiny-base" and served.is_base and not served.demo

    demo = served_model(Registry(tmp_path / "models2", str(BUNDLED_MODEL_DIR)), 3)
    assert demo.is_base and demo.demo and demo.calibration == "prior"
    assert "round" in demo.calibration_note


@pytest.mark.parametrize("method", ["default", "prior", "platt"])
def test_each_state_has_its_sentence(tmp_path: Path, method: str) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", "tiny-v1")
    doc = json.loads((checkpoint / "sidecar.json").read_text())
    doc["calibration"]["method"] = method
    (checkpoint / "sidecar.json").write_text(json.dumps(doc))

    served = served_model(Registry(tmp_path / "models", str(checkpoint)), None)

    assert served.calibration == method and served.calibration_note and "unknown" not in served.calibration_note


def test_a_version_fine_tuned_from_the_demo_model_is_still_the_demo_model(tmp_path: Path) -> None:
    tuned = save_tiny_checkpoint(tmp_path / "r1", "mkt-p3-r0001")
    doc = json.loads((tuned / "sidecar.json").read_text())
    doc["backbone_spec"] = f"local-dir:{BUNDLED_MODEL_DIR}"  # what a round records for its base
    (tuned / "sidecar.json").write_text(json.dumps(doc))
    registry = Registry(tmp_path / "models", str(BUNDLED_MODEL_DIR))
    registry.register(tuned, project=3)
    registry.promote(3, "mkt-p3-r0001")

    served = served_model(registry, 3)

    assert served.version == "mkt-p3-r0001" and not served.is_base and served.demo
