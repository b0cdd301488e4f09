"""Label quality: disputed tags rank their images first; cleanlab's aggregation; reasons."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.errors import DataError
from assistant.label_quality import EMA_ALPHA, image_quality, review_labels, tag_quality

LABELS = ["cat", "dog", "snow", "red"]


def _cleanlab_ema(scores: np.ndarray, alpha: float) -> np.ndarray:
    # cleanlab.internal.multilabel_scorer.exponential_moving_average, written out.
    ordered = np.fliplr(np.sort(scores, axis=1))
    out = ordered[:, 0]
    for k in range(1, ordered.shape[1]):
        out = alpha * ordered[:, k] + (1 - alpha) * out
    return out


def test_tag_quality_is_threshold_rescaled_self_confidence() -> None:
    thresholds = np.array([0.2, 0.5, 0.8, 0.5])
    probs = np.array([[0.2, 1.0, 0.4, 0.0]])
    q = tag_quality(probs, np.array([[1, 1, -1, 0]]), thresholds)
    # At the threshold: 0.5; a sure right answer: 1; 0.4 under a 0.8 threshold rescales to 0.25,
    # so "absent" is right with 0.75; an unknown entry is neutral.
    np.testing.assert_allclose(q, [[0.5, 1.0, 0.75, 1.0]])
    with pytest.raises(DataError):
        tag_quality(probs, np.array([[1, 1]]), thresholds)


def test_image_quality_is_cleanlabs_exponential_moving_average() -> None:
    rng = np.random.default_rng(0)
    for width in (1, 5, 40):
        scores = rng.random((30, width))
        np.testing.assert_allclose(image_quality(scores), _cleanlab_ema(scores, EMA_ALPHA), atol=1e-9)
    with pytest.raises(DataError):
        image_quality(rng.random((2, 3)), alpha=0.0)


def test_review_ranks_corrupted_annotations_first_and_says_why() -> None:
    rng = np.random.default_rng(1)
    n = 40
    truth = rng.random((n, len(LABELS))) < 0.4
    # A good model: confident and right everywhere.
    probs = np.where(truth, rng.uniform(0.8, 0.99, truth.shape), rng.uniform(0.01, 0.15, truth.shape))
    targets = np.where(truth, 1, -1).astype(np.int8)
    targets[5, 1] = -targets[5, 1]  # one corrupted tag
    targets[17, 3] = -targets[17, 3]
    targets[30, :] = 0  # nothing known about this one
    review = review_labels(probs, targets, LABELS, np.full(len(LABELS), 0.5))
    assert set(review.flagged(count=2).tolist()) == {5, 17}
    assert review.flagged(fraction=0.05).size == 2
    issue = review.worst[5]
    assert issue is not None and issue.label == "dog"
    assert issue.kind == ("wrong" if targets[5, 1] > 0 else "missing")
    assert issue.describe().startswith(f"possibly {issue.kind} 'dog'")
    assert review.worst[30] is None and review.quality[30] == pytest.approx(1.0)
    clean = review.worst[0]
    assert clean is not None and clean.kind == "agreed" and "agrees" in clean.describe()
    assert review.quality[review.order].tolist() == sorted(review.quality.tolist())


def test_two_disputed_tags_rank_below_one() -> None:
    probs = np.array([[0.95, 0.95, 0.05], [0.95, 0.05, 0.05]])
    targets = np.array([[-1, -1, -1], [-1, -1, -1]])
    review = review_labels(probs, targets, LABELS[:3], np.full(3, 0.5))
    assert review.order.tolist() == [0, 1]
