"""Label quality: annotated images whose annotations the model strongly disagrees with.

Annotators miss tags and tick wrong ones; a fine-tuning round then learns the mistake. In the
spirit of cleanlab's multi-label issue detection (Thyagarajan et al. 2023, "Identifying
incorrect annotations in multi-label classification data"), every annotated image gets a
**label quality** in [0, 1] from the model's calibrated scores, and the lowest ones are shown to
a reviewer first.

1. **Per tag**, the self-confidence of the annotation: the probability that the given answer is
   right, ``q = P`` for a tag marked present (+1) and ``q = 1 - P`` for one marked absent (-1);
   unknown entries (0) say nothing and count as ``q = 1``. ``P`` is re-estimated per label from
   the annotations themselves (**co-occurrence stacking**, :func:`stacked_tag_quality`): a
   ridge-penalised logistic regression of "marked present" on the model's scores of *every*
   label (threshold-rescaled, as logits) and on the image's *other* annotated tags, cross-fitted
   over ``folds`` deterministic folds, so each annotation is judged by a regression that never saw
   it (cleanlab needs out-of-sample probabilities). This normalises per label, like cleanlab's
   per-class thresholds: a label the model cannot see (patterns, outline-only objects: all its
   positives score low) gets ``P`` near its base rate for every image, so its true-but-hard tags
   stop looking disputed, while a tag that contradicts both the scores and the other tags still
   does. A label with fewer than ``min_per_class`` annotated positives or negatives, or a review
   of fewer than ``2 · folds`` images (the agent rates one annotation at a time), falls back to
   the model's own calibrated score rescaled to put the label's threshold at 0.5, linearly on
   each side (``p' = p / 2t`` below the threshold, ``0.5 + (p - t) / 2(1 - t)`` above:
   :func:`tag_quality`; a rare label's F1-optimal threshold may be 0.2).

   Measured on the label-quality simulation (tuning seeds 10 and 11, 600 tasks each, about 5%
   with one corrupted tag, top 5% flagged, each task scored by the model in service when it was
   annotated): the threshold rule found 7 of 64 corrupted tasks; the empirical percentile of a
   tag's score among its label's annotated positives (negatives), the plain per-label
   normalisation, found 4; a per-label kernel density ratio 11; stacking 19. With a weak model
   (mAP ~40 on these annotations) most single wrong tags still do not stand out.
2. **Per image**, cleanlab's aggregation: an exponential moving average of the per-tag qualities
   sorted from best to worst, with ``alpha = 0.8`` (cleanlab's default; :func:`image_quality`).
   The worst tag weighs 0.8, the next 0.16, and so on. This is the reported ``quality`` (the
   agent flags an annotation below 0.3). The **ranking** is by the worst tag alone (``alpha = 1``),
   ties broken by the average, so two disputed tags still rank an image below one: with one
   corrupted tag per bad image the second-worst tag only adds noise (on the tuning seeds, a
   prototype of stacking found 17 of 64 ranked by the worst tag against 10 ranked by the average).

A tag is **disputed** when its quality is below 0.5: **possibly missing** when it was marked
absent, **possibly wrong** when it was marked present.
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

__all__ = [
    "EMA_ALPHA",
    "LabelReview",
    "TagIssue",
    "image_quality",
    "review_labels",
    "stacked_tag_quality",
    "tag_quality",
]

logger = logging.getLogger(__name__)

#: cleanlab's default weight of the newest (worst) term in its multi-label aggregation.
EMA_ALPHA = 0.8
# Only the worst tags matter: the 17th worst weighs 0.8 · 0.2^16 ≈ 5e-12.
_WORST_KEPT = 16
_EPS = 1e-6
#: Cross-fitting folds, ridge penalty and the least annotated positives / negatives of a label
#: for co-occurrence stacking (module docstring, step 1).
STACK_FOLDS = 5
STACK_RIDGE = 1.0
STACK_MIN_PER_CLASS = 5
_NEWTON_STEPS = 12
_LOGIT_CLIP = 1e-4


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
        quality: ``(N,)`` image label quality in [0, 1], cleanlab's exponential moving average
            (:func:`image_quality`; low: the model disagrees). The agent's flag threshold reads it.
        order: Image indices worst first: by ascending ``worst_quality``, ties by ascending
            ``quality``, then by index.
        worst: Per image, its worst-rated tag (None when no tag is known).
        worst_quality: ``(N,)`` the worst tag's quality (1 when no tag is known), which ranks.
    """

    quality: NDArray[np.float64]
    order: NDArray[np.int64]
    worst: tuple[TagIssue | None, ...]
    worst_quality: NDArray[np.float64]

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
        thresholds: ``(C,)`` decision thresholds, or ``(N, C)`` when the images were scored by
            different models (e.g. each by the model in service when it was annotated).

    Raises:
        DataError: Shapes do not match.
    """
    p, t, thr = _checked(probabilities, targets, thresholds)
    r = _rescaled(p, thr)
    out: NDArray[np.float64] = np.where(t > 0, r, np.where(t < 0, 1.0 - r, 1.0))
    return out


def _checked(
    probabilities: ArrayLike, targets: ArrayLike, thresholds: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(targets).astype(np.int64)
    thr = np.asarray(thresholds, dtype=np.float64)
    if p.ndim != 2 or p.shape != t.shape or thr.shape not in ((p.shape[1],), p.shape):
        raise DataError(
            f"scores {p.shape}, targets {t.shape} and thresholds {thr.shape} do not match",
            fix="pass (images, labels) scores and targets and one threshold per label (or per score)",
        )
    return p, t, thr


def _logistic(x: NDArray[np.float64], y: NDArray[np.float64], ridge: float) -> NDArray[np.float64]:
    """Ridge-penalised logistic regression by Newton steps (the last column of ``x`` is the bias)."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], ridge)
    penalty[-1] = 1e-6  # the bias is not shrunk
    for _ in range(_NEWTON_STEPS):
        prob = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30.0, 30.0)))
        grad = x.T @ (prob - y) + penalty * w
        hess = (x * (prob * (1.0 - prob))[:, None]).T @ x + np.diag(penalty)
        w -= np.linalg.solve(hess, grad)
    return w


def stacked_tag_quality(
    probabilities: ArrayLike,
    targets: ArrayLike,
    thresholds: ArrayLike,
    *,
    folds: int = STACK_FOLDS,
    ridge: float = STACK_RIDGE,
    min_per_class: int = STACK_MIN_PER_CLASS,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-tag self-confidence by cross-fitted co-occurrence stacking (module docstring, step 1).

    For every label with at least ``min_per_class`` annotated positives and negatives, a logistic
    regression predicts "marked present" from the logits of all labels' threshold-rescaled scores
    and the other labels' annotations (+1 / -1 / 0); image ``i`` falls in fold ``i mod folds`` and
    is scored by the regression fitted on the other folds. Cost: ``O(C² · N · C · folds)`` (a few
    seconds for 600 images of 52 labels on 2 cores).

    Args:
        probabilities: ``(N, C)`` calibrated scores.
        targets: ``(N, C)`` annotations, +1 / -1 / 0.
        thresholds: ``(C,)`` or ``(N, C)`` decision thresholds.
        folds: Cross-fitting folds (at least 2).
        ridge: L2 penalty of the regression weights.
        min_per_class: Fewest annotated positives and negatives of a stacked label.

    Returns:
        ``(N, C)`` qualities (1 where the target is 0) and ``(C,)`` whether each label was stacked
        (False: :func:`tag_quality`'s threshold rule).

    Raises:
        DataError: Shapes do not match, or ``folds < 2``.
    """
    p, t, thr = _checked(probabilities, targets, thresholds)
    if folds < 2:
        raise DataError(f"cross-fitting needs at least 2 folds, got {folds}")
    quality = tag_quality(p, t, thr)
    n, c = p.shape
    stacked = np.zeros(c, dtype=bool)
    if n < 2 * folds:
        return quality, stacked
    r = np.clip(_rescaled(p, thr), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    logits = np.log(r / (1.0 - r))
    fold = np.arange(n) % folds
    for j in range(c):
        known = t[:, j] != 0
        if min(int((t[:, j] > 0).sum()), int((t[:, j] < 0).sum())) < min_per_class:
            continue
        others = t.astype(np.float64)
        others[:, j] = 0.0  # the tag under review is the answer, never a feature
        x = np.hstack([logits, others, np.ones((n, 1))])
        y = (t[:, j] > 0).astype(np.float64)
        present = np.full(n, 0.5)
        for k in range(folds):
            train, test = known & (fold != k), known & (fold == k)
            if test.any():
                w = _logistic(x[train], y[train], ridge)
                present[test] = 1.0 / (1.0 + np.exp(-np.clip(x[test] @ w, -30.0, 30.0)))
        quality[known, j] = np.where(t[known, j] > 0, present[known], 1.0 - present[known])
        stacked[j] = True
    return quality, stacked


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
    stack: bool = True,
) -> LabelReview:
    """Rate every annotated image's labels and rank the images worst first.

    Args:
        probabilities: ``(N, C)`` calibrated scores of the annotated images, from a model that did
            not train on them.
        targets: ``(N, C)`` their annotations, +1 / -1 / 0.
        labels: ``C`` label names.
        thresholds: ``(C,)`` decision thresholds, or ``(N, C)`` when each image was scored by its
            own model.
        alpha: Aggregation weight of ``quality`` and the tie-break (:func:`image_quality`).
        stack: Re-estimate each tag's probability by co-occurrence stacking
            (:func:`stacked_tag_quality`; labels with too few annotations, and reviews of fewer
            than ``2 · STACK_FOLDS`` images, keep the threshold rule). False: the threshold rule
            everywhere.

    Returns:
        The review, ranked by the worst tag (module docstring, step 2).

    Example:
        >>> review = review_labels(probs, targets, labels, thresholds)       # doctest: +SKIP
        >>> for i in review.flagged(0.05): print(i, review.worst[i].describe())  # doctest: +SKIP
    """
    p, t, thr = _checked(probabilities, targets, thresholds)
    q = stacked_tag_quality(p, t, thr)[0] if stack else tag_quality(p, t, thr)
    if q.shape[1] != len(labels):
        raise DataError(f"{q.shape[1]} score columns for {len(labels)} labels")
    lowest = q.min(axis=1) if q.size else np.ones(q.shape[0])
    quality = image_quality(q, alpha) if q.size else np.ones(q.shape[0])
    order = np.lexsort((np.arange(q.shape[0]), quality, lowest)).astype(np.int64)
    thr = np.broadcast_to(thr, p.shape)
    worst: list[TagIssue | None] = []
    for i in range(q.shape[0]):
        known = np.nonzero(t[i] != 0)[0]
        if known.size == 0:
            worst.append(None)
            continue
        j = int(known[np.argmin(q[i, known])])
        disputed = q[i, j] < 0.5
        kind = "agreed" if not disputed else ("wrong" if t[i, j] > 0 else "missing")
        worst.append(TagIssue(labels[j], kind, float(p[i, j]), float(thr[i, j]), float(q[i, j])))
    return LabelReview(quality, order, tuple(worst), lowest)
