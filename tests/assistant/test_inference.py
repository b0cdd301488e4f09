"""Tagging: ranked calibrated tags with seen/novel marks, from images or cached features."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from assistant.calibration import Calibrator
from assistant.checkpoint import LoadedModel
from assistant.errors import DataError
from assistant.inference import Tagger, resolve_device
from assistant.labels import LabelSet
from tests.helpers import colour_world


def _tagger(tiny_loaded, calibrator=None) -> Tagger:
    model = tiny_loaded.model
    model.seen_labels = LabelSet(("red", "green"))
    return Tagger(LoadedModel(model, calibrator or Calibrator.default(bias=0.0, temperature=0.05)), device="cpu")


def _images(n=5):
    images, _ = colour_world(n, 3, size=48)
    return [Image.fromarray(im) for im in images]


def test_tags_are_ranked_calibrated_and_marked(tiny_loaded):
    tagger = _tagger(tiny_loaded)
    out = tagger.tag(_images(), ["red", "green", "zebra"])
    assert len(out) == 5
    for image_tags in out:
        scores = [t.score for t in image_tags.tags]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        marks = {t.label: t.seen for t in image_tags.tags}
        assert marks == {"red": True, "green": True, "zebra": False}
        assert all(t.selected == (t.score >= t.threshold) for t in image_tags.tags)


def test_feature_path_equals_image_path_and_vocab_can_grow(tiny_loaded):
    tagger = _tagger(tiny_loaded)
    images = _images(3)
    features = tagger.features(images)
    direct = tagger.probabilities(tagger.features(images), ["red", "green"])
    np.testing.assert_allclose(tagger.probabilities(features, ["red", "green"]), direct, atol=1e-6)
    # Adding a novel label leaves the other labels' calibrated scores unchanged (cosine mode).
    grown = tagger.probabilities(features, ["red", "green", "zebra"])
    np.testing.assert_allclose(grown[:, :2], direct, atol=1e-6)
    # Embeddings are cached: the second call embeds only the new label.
    before = tagger.model.embedding_cache.misses
    tagger.probabilities(features, ["red", "green", "zebra", "snow"])
    assert tagger.model.embedding_cache.misses == before + 1


def test_per_label_thresholds_from_the_calibrator(tiny_loaded):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 2))
    targets = np.where(scores + rng.normal(scale=0.5, size=scores.shape) > 0.5, 1, -1)
    calibrator = Calibrator.fit(scores, targets, ["red", "green"])
    tagger = _tagger(tiny_loaded, calibrator)
    out = tagger.tag(_images(2), ["red", "green", "zebra"])
    thresholds = {t.label: t.threshold for t in out[0].tags}
    assert thresholds["zebra"] == pytest.approx(calibrator.threshold)
    assert thresholds["red"] == pytest.approx(float(calibrator.thresholds(["red"])[0]))


def test_empty_inputs_are_clear_errors(tiny_loaded):
    tagger = _tagger(tiny_loaded)
    with pytest.raises(DataError, match="(?i)no images"):
        tagger.tag([], ["red"])
    with pytest.raises(DataError, match="(?i)vocabulary is empty"):
        tagger.tag(_images(1), [])


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
