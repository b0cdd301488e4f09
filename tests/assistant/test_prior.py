"""Backbone calibration priors: the global-only fit, calibration.json, and load_model's choice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image

from assistant.calibration import Calibrator
from assistant.checkpoint import PRIOR_FILE, load_model, save_checkpoint
from assistant.errors import ConfigError, DataError, ModelLoadError
from assistant.factory import create_backbone
from assistant.inference import Tagger
from assistant.prior import fit_backbone_prior, model_directory, prior_raw_scores, write_prior
from benchworld.world import generate_split
from benchworld.world.pretrain import save_open_clip_dir

LABELS = ["cat", "dog", "snow"]


def _separable(n: int = 400, seed: int = 0) -> tuple[NDArray[Any], NDArray[Any]]:
    """Cosine-like scores: positives around 0.40, negatives around 0.20 (sd 0.04), ~20% positive."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, len(LABELS))) < 0.2
    scores = np.where(truth, rng.normal(0.40, 0.04, truth.shape), rng.normal(0.20, 0.04, truth.shape))
    return scores, np.where(truth, 1, -1).astype(np.int8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny open_clip model directory (test-tiny, random weights) with a manifest."""
    torch.manual_seed(0)
    backbone = create_backbone("test-tiny", allow_random=True)
    return save_open_clip_dir(backbone, "test-tiny", tmp_path_factory.mktemp("prior") / "tiny", {"seed": 0})


def test_prior_is_a_monotone_global_map_whose_threshold_separates() -> None:
    scores, targets = _separable()
    prior = Calibrator.fit_prior(scores, targets, LABELS)
    assert prior.method == "prior" and prior.is_prior and dict(prior.labels) == {}
    full = Calibrator.fit(scores, targets, LABELS)
    assert (prior.slope, prior.intercept, prior.threshold) == (full.slope, full.intercept, full.threshold)
    assert not full.is_prior and Calibrator.default().is_prior
    grid = np.linspace(-0.2, 0.8, 201)
    probs = prior.apply(grid[:, None], ["any novel label"])[:, 0]
    assert np.all(np.diff(probs) >= -1e-12) and probs[0] < 0.05 and probs[-1] > 0.95
    # The cut on the raw score lies between the two clusters, and decides most entries right.
    raw_cut = grid[np.argmax(probs >= prior.threshold)]
    assert 0.25 < raw_cut < 0.35
    accuracy = float(np.mean(prior.predict(scores, LABELS) == (targets == 1)))
    assert accuracy > 0.95
    # Every label, known at fit time or not, gets the same global threshold.
    np.testing.assert_array_equal(prior.thresholds(["cat", "zebra"]), [prior.threshold] * 2)


def test_prior_round_trips_through_json() -> None:
    prior = Calibrator.fit_prior(*_separable(), LABELS)
    again = Calibrator.from_dict(json.loads(json.dumps(prior.to_dict())))
    assert again == prior and again.is_prior


def test_prior_needs_positives_and_negatives() -> None:
    scores, _ = _separable()
    with pytest.raises(DataError, match="(?i)too little"):
        Calibrator.fit_prior(scores, -np.ones(scores.shape, dtype=np.int8), LABELS)


def test_load_model_uses_the_directory_prior_else_the_default(model_dir: Path, tmp_path: Path) -> None:
    assert load_model(f"local-dir:{model_dir}").calibrator == Calibrator.default()
    prior = Calibrator.fit_prior(*_separable(), LABELS)
    bare = tmp_path / "with-prior"
    bare.mkdir()
    for f in model_dir.iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    (bare / PRIOR_FILE).write_text(json.dumps(prior.to_dict()))
    for source in (f"local-dir:{bare}", str(bare), bare):
        assert load_model(source).calibrator == prior
    # A bare architecture (like a hub tag) never reads a prior; a checkpoint keeps its own.
    assert load_model("test-tiny", allow_random=True).calibrator.method == "default"
    loaded = load_model(bare)
    loaded.calibrator = Calibrator.fit(*_separable(), LABELS)
    save_checkpoint(loaded, tmp_path / "ckpt")
    assert load_model(tmp_path / "ckpt").calibrator.method == "platt"
    (bare / PRIOR_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=PRIOR_FILE):
        load_model(bare)


def test_fit_backbone_prior_scores_like_the_tagger_and_writes_the_prior(model_dir: Path, tmp_path: Path) -> None:
    val = generate_split("val", 24)
    cols = [i for i, s in enumerate(val.seen) if s]
    labels = [val.label_names[i] for i in cols]
    fit = fit_backbone_prior(f"local-dir:{model_dir}", val.images, val.targets[:, cols], labels)
    tagger = Tagger(load_model(f"local-dir:{model_dir}"), device="cpu")
    served = tagger.raw_scores(tagger.features([Image.fromarray(im) for im in val.images]), labels)
    raw = prior_raw_scores(load_model(model_dir), val.images, labels)
    np.testing.assert_allclose(raw, served, atol=1e-6)
    assert fit.calibrator == Calibrator.fit_prior(raw, val.targets[:, cols], labels)
    assert fit.images == 24 and fit.labels == 49 and fit.positives + fit.negatives == 24 * 49

    path = write_prior(model_dir, fit, provenance={"data": {"data_hash": val.data_hash}})
    doc = json.loads(path.read_text())
    assert Calibrator.from_dict(doc) == fit.calibrator and doc["provenance"]["images"] == 24
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0  # the rest of the manifest is kept
    recorded = manifest["calibration_prior"]
    assert recorded["slope"] == fit.calibrator.slope and recorded["data"]["data_hash"] == val.data_hash
    assert load_model(model_dir).calibrator == fit.calibrator
    path.unlink()


def test_only_local_model_directories_take_a_prior(model_dir: Path, tmp_path: Path, tiny_loaded) -> None:
    assert model_directory(f"local-dir:{model_dir}") == model_dir
    with pytest.raises(ConfigError, match="not a local model directory"):
        model_directory("ViT-B-16:laion2b_s34b_b88k")
    with pytest.raises(ConfigError, match="not a local model directory"):
        model_directory(tmp_path / "missing")
    save_checkpoint(tiny_loaded, tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="checkpoint"):
        model_directory(tmp_path / "ckpt")


def test_check_calibration_compares_served_probabilities_with_the_truth(model_dir: Path) -> None:
    from assistant.prior import check_calibration
    from preannotation import reliability, show_mask

    loaded = load_model(f"local-dir:{model_dir}")
    split = generate_split("test", 10)
    labels = list(split.label_names[:6])
    truth = split.targets[:, :6] > 0
    check = check_calibration(loaded, split.images, truth, labels, bins=5)
    p = loaded.calibrator.apply(prior_raw_scores(loaded, split.images, labels), labels)
    assert check.reliability == reliability(p, truth, 5)
    shown = show_mask(p)
    assert check.effort.kept == int((shown & truth).sum()) and check.effort.removed == int((shown & ~truth).sum())
    assert (check.images, check.labels) == (10, 6) and check.summary()["rule"]["tasks"] == 10
    with pytest.raises(DataError, match="does not match"):
        check_calibration(loaded, split.images, truth[:, :3], labels)
