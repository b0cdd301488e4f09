"""Checkpoints: bit-exact round trips, and refusals of anything that does not match."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from assistant.calibration import Calibrator
from assistant.checkpoint import LoadedModel, load_checkpoint, load_model, read_sidecar, save_checkpoint
from assistant.config import Stage2Config
from assistant.data import ArrayImageDataset
from assistant.errors import CheckpointError
from assistant.labels import LabelSet
from assistant.train import train_stage2
from tests.helpers import colour_world


def _trained(tiny_loaded) -> LoadedModel:
    labels = LabelSet(("red", "green", "blue"))
    images, targets = colour_world(24, 3)
    train_stage2(tiny_loaded.model, ArrayImageDataset(images, targets), labels, Stage2Config(epochs=1, batch_size=8))
    return LoadedModel(tiny_loaded.model, Calibrator.default(bias=0.1), None)


def test_round_trip_is_bit_exact(tiny_loaded, tmp_path):
    loaded = _trained(tiny_loaded)
    sidecar = save_checkpoint(loaded, tmp_path / "v1", version="p1-r1", metrics={"mAP": 42.0}, parent_version="base")
    back = load_checkpoint(tmp_path / "v1")
    a, b = loaded.model.state_dict(), back.model.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert back.model.version == "p1-r1" and back.sidecar is not None
    assert back.sidecar.metrics == {"mAP": 42.0} and back.sidecar.parent_version == "base"
    assert tuple(back.model.seen_labels) == ("red", "green", "blue")
    assert back.calibrator == loaded.calibrator
    assert sidecar.image_tower_version == back.model.image_tower_version()


def test_existing_directory_is_never_overwritten(tiny_loaded, tmp_path):
    loaded = _trained(tiny_loaded)
    save_checkpoint(loaded, tmp_path / "v1")
    with pytest.raises(CheckpointError, match="(?i)already exists"):
        save_checkpoint(loaded, tmp_path / "v1")


def test_failed_write_leaves_nothing_behind(tiny_loaded, tmp_path, monkeypatch):
    loaded = _trained(tiny_loaded)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("assistant.checkpoint.save_file", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(loaded, tmp_path / "v1")
    assert list(tmp_path.iterdir()) == []


def _edit_sidecar(path, **changes):
    doc = json.loads((path / "sidecar.json").read_text())
    doc.update(changes)
    (path / "sidecar.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("mutation", "match"),
    [
        (lambda p: _edit_sidecar(p, seen_labels=["red", "green"]), "fingerprint"),
        (lambda p: _edit_sidecar(p, format_version=99), "format version"),
        (lambda p: _edit_sidecar(p, format="other"), "not an MKT checkpoint"),
        (lambda p: _edit_sidecar(p, head={"topk": 4, "bogus": 1}), "invalid configs"),
        (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-10]), "digest"),
        (lambda p: (p / "model.safetensors").unlink(), "no weights"),
        (lambda p: (p / "sidecar.json").write_text("{not json"), "not valid JSON"),
    ],
)
def test_mismatched_or_damaged_checkpoints_are_refused(tiny_loaded, tmp_path, mutation, match):
    save_checkpoint(_trained(tiny_loaded), tmp_path / "v1")
    mutation(tmp_path / "v1")
    with pytest.raises(CheckpointError, match=f"(?i){match}"):
        load_checkpoint(tmp_path / "v1")


def test_shape_mismatch_is_refused(tiny_loaded, tmp_path):
    save_checkpoint(_trained(tiny_loaded), tmp_path / "v1")
    # A prompt with another template has a context of another length.
    doc = json.loads((tmp_path / "v1" / "sidecar.json").read_text())
    doc["prompt"]["template"] = "a {}"
    (tmp_path / "v1" / "sidecar.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="(?i)do not fit"):
        load_checkpoint(tmp_path / "v1")


def test_delta_checkpoint_over_real_weights_checks_the_base(tmp_path):
    from tests.assistant.test_factory import _save_open_clip_dir

    base = tmp_path / "base"
    base.mkdir()
    _save_open_clip_dir(base)
    loaded = load_model(f"local-dir:{base}")
    sidecar = save_checkpoint(loaded, tmp_path / "v1", tuned_parameters={"backbone.model.visual.proj"})
    assert not sidecar.full_weights
    # A delta holds the prompt and the tuned image parameters only.
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "v1" / "model.safetensors")))
    assert "backbone.model.visual.proj" in keys and all(
        k.startswith("prompt_learner.") or k == "backbone.model.visual.proj" for k in keys
    )
    moved = tmp_path / "moved"
    shutil.copytree(base, moved)
    assert load_checkpoint(tmp_path / "v1", base_spec=f"local-dir:{moved}").model.version == sidecar.version
    other = tmp_path / "other"
    other.mkdir()
    _save_open_clip_dir(other, seed=99)
    with pytest.raises(CheckpointError, match="(?i)base model"):
        load_checkpoint(tmp_path / "v1", base_spec=f"local-dir:{other}")
    assert read_sidecar(tmp_path / "v1").backbone_version == loaded.model.backbone.version
