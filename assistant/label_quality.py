"""Label quality: annotated images whose annotations the model strongly disagrees with.

Annotators miss tags and tick wrong ones; a fine-tuning round then learns the mistake. In the
spirit of cleanlab's multi-label issue detection (Thyagarajan et al. 2023, "Identifying
incorrect annotations in multi-label classification data"), every annotated image gets a
**label quality** in [0, 1] from the model's calibrated scores, and the lowest ones are shown to
a reviewer first.

1. **Per tag**, the self-confidence of the annotation: the model's probability that the given
   answer is right. Our calibrated scores have per-label decision thresholds (a rare label's
   F1-optimal threshold may be 0.2), so the score is first rescaled to put the threshold at 0.5,
   linearly on each side (``p' = p / 2t`` below the threshold, ``0.5 + (p - t) / 2(1 - t)``
   above). Then ``q = p'`` for a tag marked present (+1) and ``q = 1 - p'`` for one marked
   absent (-1); unknown entries (0) say nothing and count as ``q = 1``.
2. **Per image**, cleanlab's aggregation: an exponential moving average of the per-tag qualities
   sorted from best to worst, with ``alpha = 0.8`` (cleanlab's default). The worst tag weighs
   0.8, the next 0.16, and so on, so one strongly disputed tag is enough to flag an image, while
   two disputed tags rank it lower than one.

A disputed tag is **possibly missing** when it was marked absent but the model scores it above
its threshold, and **possibly wrong** when it was marked present but the model scores it below.
The scores should come from a model that did not train on the annotations under review (a round's
held-out split, or a model from before them): a model that fitted the mistakes agrees with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assistant.errors import DataError

__all__ = ["EMA_ALPHA", "LabelReview", "TagIssue", "image_quality", "review_labels", "tag_quality"]

logger = logging.getLogger(__name__)

#: cleanlab's default weight of the newest (worst) term in its multi-label aggregation.
EMA_ALPHA = 0.8
# Only the worst tags matter: the 17th worst weighs 0.8 · 0.2^16 ≈ 5e-12.
_WORST_KEPT = 16
_EPS = 1e-6


@dataclass(frozen=True)
class TagIssue:
    """The worst-rated tag of an annotated image.

    Attributes:
        label: The tag.
        kind: ``missing`` (marked absent, the model says present) or ``wrong`` (marked present,
            the model says absent); ``agreed`` when the model agrees with the annotation.
        probability: The model's calibrated score.
        threshold: The tag's decision threshold.
        quality: The tag's self-confidence ``q`` (module docstring).
    """

    label: str
    kind: str
    probability: float
    threshold: float
    quality: float

    def describe(self) -> str:
        """``possibly missing 'zebra' (model 0.93, threshold 0.41)``."""
        if self.kind == "agreed":
            return f"the model agrees with every tag (least sure: '{self.label}' {self.probability:.2f})"
        return f"possibly {self.kind} '{self.label}' (model {self.probability:.2f}, threshold {self.threshold:.2f})"


@dataclass(frozen=True)
class LabelReview:
    """Label quality of annotated images, worst first.

    Attributes:
        quality: ``(N,)`` image label quality in [0, 1] (low: the model disagrees).
        order: Image indices by ascending quality (ties: lower index first).
        worst: Per image, its worst-rated tag (None when no tag is known).
    """

    quality: NDArray[np.float64]
    order: NDArray[np.int64]
    worst: tuple[TagIssue | None, ...]

    def flagged(self, fraction: float | None = None, count: int | None = None) -> NDArray[np.int64]:
        """The lowest-quality images: the first ``count``, or the first ``ceil(fraction · N)``."""
        if count is None:
            count = int(np.ceil((0.05 if fraction is None else fraction) * self.order.size))
        return self.order[: max(0, min(count, self.order.size))]


def _rescaled(probabilities: NDArray[np.float64], thresholds: NDArray[np.float64]) -> NDArray[np.float64]:
    p = np.clip(probabilities, 0.0, 1.0)
    t = np.clip(thresholds, _EPS, 1.0 - _EPS)
    below = 0.5 * p / t
    above = 0.5 + 0.5 * (p - t) / (1.0 - t)
    out: NDArray[np.float64] = np.where(p < t, below, above)
    return out


def tag_quality(probabilities: ArrayLike, targets: ArrayLike, thresholds: ArrayLike) -> NDArray[np.float64]:
    """Per-tag self-confidence ``q`` in [0, 1]; 1 where the target is 0 (module docstring, step 1).

    Args:
        probabilities: ``(N, C)`` calibrated scores.
        targets: ``(N, C)`` annotations, +1 / -1 / 0.
        thresholds: ``(C,)`` decision thresholds.

    Raises:
        DataError: Shapes do not match.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(targets)
    thr = np.asarray(thresholds, dtype=np.float64)
    if p.ndim != 2 or p.shape != t.shape or thr.shape != (p.shape[1],):
        raise DataError(
            f"scores {p.shape}, targets {t.shape} and thresholds {thr.shape} do not match",
            fix="pass (images, labels) scores and targets and one threshold per label",
        )
    r = _rescaled(p, thr)
    out: NDArray[np.float64] = np.where(t > 0, r, np.where(t < 0, 1.0 - r, 1.0))
    return out


def image_quality(tag_qualities: ArrayLike, alpha: float = EMA_ALPHA) -> NDArray[np.float64]:
    """cleanlab's exponential moving average over each row sorted best to worst (step 2).

    Args:
        tag_qualities: ``(N, C)`` per-tag qualities.
        alpha: Weight of each newer (worse) term, in (0, 1].

    Returns:
        ``(N,)`` image qualities in [0, 1].
    """
    q = np.asarray(tag_qualities, dtype=np.float64)
    if not 0.0 < alpha <= 1.0:
        raise DataError(f"alpha must be in (0, 1], got {alpha}")
    if q.shape[1] > _WORST_KEPT:
        q = np.partition(q, _WORST_KEPT - 1, axis=1)[:, :_WORST_KEPT]
    ordered = -np.sort(-q, axis=1)  # best first, worst last
    ema = ordered[:, 0].copy()
    for j in range(1, ordered.shape[1]):
        ema = alpha * ordered[:, j] + (1.0 - alpha) * ema
    return ema


def review_labels(
    probabilities: ArrayLike,
    targets: ArrayLike,
    labels: Sequence[str],
    thresholds: ArrayLike,
    *,
    alpha: float = EMA_ALPHA,
) -> LabelReview:
    """Rate every annotated image's labels and rank the images worst first.

    Args:
        probabilities: ``(N, C)`` calibrated scores of the annotated images.
        targets: ``(N, C)`` their annotations, +1 / -1 / 0.
        labels: ``C`` label names.
        thresholds: ``(C,)`` decision thresholds.
        alpha: Aggregation weight (:func:`image_quality`).

    Returns:
        The review.

    Example:
        >>> review = review_labels(probs, targets, labels, thresholds)       # doctest: +SKIP
        >>> for i in review.flagged(0.05): print(i, review.worst[i].describe())  # doctest: +SKIP
    """
    q = tag_quality(probabilities, targets, thresholds)
    if q.shape[1] != len(labels):
        raise DataError(f"{q.shape[1]} score columns for {len(labels)} labels")
    quality = image_quality(q, alpha) if q.size else np.ones(q.shape[0])
    order = np.argsort(quality, kind="stable").astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(targets)
    thr = np.asarray(thresholds, dtype=np.float64)
    worst: list[TagIssue | None] = []
    for i in range(q.shape[0]):
        known = np.nonzero(t[i] != 0)[0]
        if known.size == 0:
            worst.append(None)
            continue
        j = int(known[np.argmin(q[i, known])])
        disputed = q[i, j] < 0.5
        kind = "agreed" if not disputed else ("wrong" if t[i, j] > 0 else "missing")
        worst.append(TagIssue(labels[j], kind, float(p[i, j]), float(thr[j]), float(q[i, j])))
    return LabelReview(quality, order, tuple(worst))
