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
from preannotation import EditCosts
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
        # Selected by the pre-annotation rule: the break-even point of equal edit costs.
        assert all(t.selected == (t.score >= 0.5) and t.threshold == 0.5 for t in image_tags.tags)


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


def test_scores_come_from_the_calibrator_and_selection_from_the_edit_costs(tiny_loaded):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 2))
    targets = np.where(scores + rng.normal(scale=0.5, size=scores.shape) > 0.5, 1, -1)
    calibrator = Calibrator.fit(scores, targets, ["red", "green"])
    tagger = _tagger(tiny_loaded, calibrator)
    images = _images(2)
    labels = ["red", "green", "zebra"]
    expected = tagger.probabilities(tagger.features(images), labels)
    out = tagger.tag(images, labels, EditCosts(add=3, remove=1))  # adds cost 3x: show from p = 0.25
    for row, image_tags in zip(expected, out, strict=True):
        by_label = {t.label: t for t in image_tags.tags}
        for label, p in zip(labels, row, strict=True):
            assert by_label[label].score == pytest.approx(float(p))
            assert by_label[label].selected == (p >= 0.25) and by_label[label].threshold == pytest.approx(0.25)
    # The calibrator's F1-optimal thresholds serve evaluation, not the selection.
    assert not np.allclose(calibrator.thresholds(labels), 0.25)


def test_empty_inputs_are_clear_errors(tiny_loaded):
    tagger = _tagger(tiny_loaded)
    with pytest.raises(DataError, match="(?i)no images"):
        tagger.tag([], ["red"])
    with pytest.raises(DataError, match="(?i)vocabulary is empty"):
        tagger.tag(_images(1), [])


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
