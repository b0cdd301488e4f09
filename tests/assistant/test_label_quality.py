"""Label quality: disputed tags rank their images first; cleanlab's aggregation; reasons."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.errors import DataError
from assistant.label_quality import EMA_ALPHA, image_quality, review_labels, stacked_tag_quality, tag_quality

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
    # Ranked by the worst tag.
    assert review.worst_quality[review.order].tolist() == sorted(review.worst_quality.tolist())


def test_two_disputed_tags_rank_below_one() -> None:
    probs = np.array([[0.95, 0.95, 0.05], [0.95, 0.05, 0.05]])
    targets = np.array([[-1, -1, -1], [-1, -1, -1]])
    review = review_labels(probs, targets, LABELS[:3], np.full(3, 0.5))
    assert review.order.tolist() == [0, 1]


def _weak_model_case() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """200 images: 'striped' the model cannot see, 'zebra' and 'red' it sees; one wrong tick.

    Every striped positive scores as low as the negatives (a true-but-hard tag); image 7 has
    'zebra' ticked although the model (rightly) scores it like every zebra negative.
    """
    rng = np.random.default_rng(3)
    n = 200
    truth = rng.random((n, 3)) < 0.35
    low = rng.uniform(0.02, 0.2, truth.shape)
    probs = np.where(truth, rng.uniform(0.7, 0.97, truth.shape), low)
    probs[:, 0] = rng.uniform(0.02, 0.2, n)  # 'striped': blind
    truth[7, 1] = False
    probs[7, 1] = 0.12
    targets = np.where(truth, 1, -1).astype(np.int8)
    targets[7, 1] = 1  # the wrong tick
    return probs, targets, ["striped", "zebra", "red"]


def test_stacking_spares_true_but_hard_tags_and_flags_a_wrong_tick() -> None:
    probs, targets, labels = _weak_model_case()
    thresholds = np.full(3, 0.5)
    hard = int(np.argmin(np.where(targets[:, 0] > 0, probs[:, 0], np.inf)))  # lowest-scored true 'striped'
    old = review_labels(probs, targets, labels, thresholds, stack=False)
    # The threshold rule ranks the lowest true 'striped' below the wrong 'zebra' (0.02-ish vs 0.12).
    assert old.order.tolist().index(hard) < old.order.tolist().index(7)
    new = review_labels(probs, targets, labels, thresholds)
    assert new.flagged(count=1).tolist() == [7]
    issue = new.worst[7]
    assert issue is not None and issue.label == "zebra" and issue.kind == "wrong"
    # Hard-but-true 'striped' tags sit near the label's base rate, not near 0.
    q, stacked = stacked_tag_quality(probs, targets, thresholds)
    assert stacked.all()
    assert q[targets[:, 0] > 0, 0].min() > 0.15 > q[7, 1]


def test_stacking_falls_back_to_the_threshold_rule_without_enough_annotations() -> None:
    probs, targets, labels = _weak_model_case()
    thresholds = np.full((probs.shape[0], 3), 0.5)  # one row of thresholds per scoring model
    few = targets.copy()
    few[:, 2] = np.where(np.arange(len(few)) < 3, 1, -1)  # 'red': 3 positives, too few
    q, stacked = stacked_tag_quality(probs, few, thresholds)
    assert stacked.tolist() == [True, True, False]
    np.testing.assert_allclose(q[:, 2], tag_quality(probs, few, thresholds)[:, 2])
    # A single annotation (the agent's case) is rated by the threshold rule alone.
    one = review_labels(probs[:1], targets[:1], labels, thresholds[:1])
    np.testing.assert_allclose(one.quality, image_quality(tag_quality(probs[:1], targets[:1], thresholds[:1])))
    with pytest.raises(DataError):
        stacked_tag_quality(probs, targets, np.full(4, 0.5))
    with pytest.raises(DataError):
        stacked_tag_quality(probs, targets, thresholds, folds=1)
