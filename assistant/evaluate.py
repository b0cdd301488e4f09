"""ML-ZSL evaluation exactly as the MKT/BiAM reference code computes it (docs/method.md §8), in numpy.

Definitions, to be stated next to every number (docs/method.md §8.5):

- **Targets** are +1 (present), -1 (absent, a negative) or 0 (unknown). Only 0 is unknown.
- **AP of a class** (§8.2): keep the rows whose target is ±1, sort their scores in descending
  order and average the precision at the rank of each positive (non-interpolated):
  ``AP_c = (1/N_pos) Σ_{positives} tp(i) / i``. A class with no positive left has AP 0 and
  **stays in the mean**, as in the reference code.
- **mAP** is the unweighted mean of the per-class APs over every evaluated column.
- **F1@K** (§8.3, mode "overall", micro top-K): the top-K labels of every image by score are
  predicted; ``TP`` counts predicted entries whose target is +1; ``P = TP / (N·K)`` over **all**
  N images (an image without positives adds K misses); ``R = TP / #(+1 entries)``;
  ``F1 = 2PR / (P + R)``, 0 when P + R = 0. A top-K slot that lands on an unknown (0) entry
  counts as a miss, exactly as in the reference code.
- **Ties** (docs/method.md §8.7) are broken deterministically by a stable sort: among equal scores, the earlier row
  (image) ranks first for AP and the earlier column (label) ranks first for top-K. The reference
  uses ``torch.sort``/``topk``, whose tie order is unspecified; with continuous scores ties do
  not occur and the two agree.
- **Open Images variant** (§8.6, ``open_images=True``): images with no +1 in the evaluated
  label set are dropped; the mean covers only classes with at least one non-zero annotation
  among the kept images; a weighted mAP ``Σ n_c·AP_c / Σ n_c`` (n_c = positives of class c) is
  added under the key ``mAP_weighted``. Published Open Images mAPs are the weighted ones.

Summary numbers are in percent (0-100, as the published tables); per-label APs are fractions
(0-1). The functions never write to the caller's arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assistant.errors import DataError

__all__ = [
    "DEFAULT_KS",
    "TopKResult",
    "ap_by_label",
    "MapDifference",
    "average_precision",
    "check_label_names",
    "evaluate",
    "evaluate_gzsl",
    "evaluate_zsl",
    "map_difference",
    "per_label_ap",
    "top_k",
    "validate_inputs",
]

logger = logging.getLogger(__name__)

# NUS-WIDE ZSL/GZSL report K = 3 and 5 (§8.4); Open Images uses 10 and 20 (pass them explicitly).
DEFAULT_KS: tuple[int, ...] = (3, 5)

FloatArray = NDArray[np.float64]
TargetArray = NDArray[np.int8]


@dataclass(frozen=True)
class TopKResult:
    """Micro top-K counts and rates for one K (rates are fractions, not percent).

    Attributes:
        k: Labels predicted per image.
        tp: Predicted entries whose target is +1.
        n_predicted: ``N·K``, every image included.
        n_positive: Number of +1 entries in the targets.
        precision: ``tp / n_predicted``.
        recall: ``tp / n_positive`` (0 when there is no positive).
        f1: ``2PR / (P + R)`` (0 when P + R = 0).
    """

    k: int
    tp: int
    n_predicted: int
    n_positive: int
    precision: float
    recall: float
    f1: float


def validate_inputs(scores: ArrayLike, targets: ArrayLike) -> tuple[FloatArray, TargetArray]:
    """Check a score matrix and its targets and return them as float64 / int8 arrays.

    Args:
        scores: Images × labels scores; higher means more likely present. ±inf is allowed.
        targets: Same shape, +1 present, -1 absent, 0 unknown (ints or floats with those values).

    Returns:
        ``(scores, targets)``; the scores may be the caller's own float64 array (no copy of a
        possibly large matrix), so neither result may be written to.

    Raises:
        DataError: Not 2-D, empty, shapes differ, NaN scores, boolean targets or targets outside
            {1, -1, 0}.
    """
    try:
        s = np.asarray(scores, dtype=np.float64)
        t_raw = np.asarray(targets)
        if t_raw.dtype.kind not in "biuf":
            raise TypeError(f"dtype {t_raw.dtype}")
    except (TypeError, ValueError) as e:
        raise DataError(
            "Scores and targets must be numeric arrays", why=str(e), fix="pass float scores and +1/-1/0 targets"
        ) from e
    if s.ndim != 2 or t_raw.ndim != 2:
        raise DataError(
            f"Scores and targets must be 2-D (images × labels); got {s.ndim}-D scores and {t_raw.ndim}-D targets",
            fix="pass one row per image and one column per label, e.g. shape (256, 80)",
        )
    if s.shape != t_raw.shape:
        raise DataError(
            f"Scores have shape {s.shape} but targets have shape {t_raw.shape}",
            why="every score needs the target of the same image and label",
            fix="score exactly the labels and images of the target matrix, in the same order",
        )
    if s.size == 0:
        raise DataError(
            f"Nothing to evaluate: the score matrix has shape {s.shape}", fix="pass at least one image and one label"
        )
    if t_raw.dtype == np.bool_:
        raise DataError(
            "Targets are boolean",
            why="True/False cannot express the three states +1 present, -1 absent, 0 unknown",
            fix="convert with np.where(mask, 1, -1) (every entry known) before evaluating",
        )
    if np.isnan(s).any():
        raise DataError(
            f"{int(np.isnan(s).sum())} scores are NaN",
            why="NaN has no rank, so AP and top-K are undefined",
            fix="check the model output; score every (image, label) pair",
        )
    valid = np.isin(t_raw, (1, -1, 0))
    if not valid.all():
        bad = np.unique(t_raw[~valid])[:5]
        raise DataError(
            f"Targets must be +1 (present), -1 (absent) or 0 (unknown); found {bad.tolist()}",
            fix="map your encoding first, e.g. 0/1 labels with np.where(y == 1, 1, -1); 0 means unknown",
        )
    return s, t_raw.astype(np.int8)


def _ap_column(scores: FloatArray, targets: TargetArray) -> float:
    """AP of one column over its ±1 rows (inputs already validated)."""
    known = targets != 0
    hits = targets[known] == 1
    n_pos = int(hits.sum())
    if n_pos == 0:
        return 0.0  # the reference's "empty class": AP 0, kept in the mean
    # Stable sort of the negated scores = descending order, ties in row order.
    order = np.argsort(-scores[known], kind="stable")
    ranked = hits[order]
    tp = np.cumsum(ranked)
    ranks = np.arange(1, ranked.size + 1)
    return float(np.sum(tp[ranked] / ranks[ranked]) / n_pos)


def average_precision(scores: ArrayLike, targets: ArrayLike) -> float:
    """Non-interpolated AP of one label (a 1-D column), as a fraction in [0, 1].

    Args:
        scores: One score per image.
        targets: +1 / -1 / 0 per image; 0 rows are excluded.

    Returns:
        The AP; 0.0 when no positive remains.

    Raises:
        DataError: The inputs are not matching 1-D arrays or fail :func:`validate_inputs`.
    """
    s, t = np.asarray(scores), np.asarray(targets)
    if s.ndim != 1 or t.ndim != 1:
        raise DataError(
            f"AP of one label needs 1-D scores and targets; got {s.ndim}-D scores and {t.ndim}-D targets",
            fix="use per_label_ap for a whole matrix",
        )
    s2, t2 = validate_inputs(s[:, None], t[:, None])
    return _ap_column(s2[:, 0], t2[:, 0])


def per_label_ap(scores: ArrayLike, targets: ArrayLike) -> FloatArray:
    """AP of every label column, as fractions in [0, 1].

    Args:
        scores: Images × labels scores.
        targets: Same shape, +1 / -1 / 0.

    Returns:
        A float64 array of length ``n_labels``; labels without a positive have AP 0.

    Raises:
        DataError: See :func:`validate_inputs`.
    """
    s, t = validate_inputs(scores, targets)
    return np.array([_ap_column(s[:, c], t[:, c]) for c in range(s.shape[1])], dtype=np.float64)


@dataclass(frozen=True)
class MapDifference:
    """mAP of method A minus mAP of method B on the same images, with a bootstrap interval.

    Attributes:
        difference: The observed difference, in mAP points (percent).
        low: Lower end of the central ``level`` bootstrap interval.
        high: Upper end.
        level: Coverage of the interval (0.95 by default).
        resamples: Bootstrap resamples drawn.
    """

    difference: float
    low: float
    high: float
    level: float
    resamples: int

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form (rounded to 0.01 points)."""
        return {
            "difference": round(self.difference, 2),
            "low": round(self.low, 2),
            "high": round(self.high, 2),
            "level": self.level,
            "resamples": self.resamples,
        }


def map_difference(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    targets: ArrayLike,
    *,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> MapDifference:
    """Paired bootstrap over images of ``mAP(A) - mAP(B)``: is a margin larger than the test set's noise?

    Both methods are scored on the same resampled images each time, so what the two share (hard
    images, rare labels) cancels and the interval measures the difference only. A label with no
    positive in a resample has AP 0 for both methods (the protocol's rule), adding nothing.

    Args:
        scores_a: Images × labels scores of method A.
        scores_b: Same shape, method B.
        targets: Same shape, +1 / -1 / 0.
        resamples: Bootstrap draws (200 gives the 95% ends to about ±0.1 points here).
        level: Central coverage of the interval, in (0, 1).
        seed: Seed of the resampling.

    Returns:
        The observed difference and its percentile interval, in mAP points.

    Raises:
        DataError: Shapes differ, or ``resamples`` / ``level`` are out of range.
    """
    a, t = validate_inputs(scores_a, targets)
    b, _ = validate_inputs(scores_b, targets)
    if a.shape != b.shape:
        raise DataError(f"the two score matrices differ in shape: {a.shape} vs {b.shape}", fix="score the same images")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise DataError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")

    def diff(rows: NDArray[np.intp]) -> float:
        ap_a = [_ap_column(a[rows, c], t[rows, c]) for c in range(a.shape[1])]
        ap_b = [_ap_column(b[rows, c], t[rows, c]) for c in range(b.shape[1])]
        return 100.0 * (float(np.mean(ap_a)) - float(np.mean(ap_b)))

    n = a.shape[0]
    rng = np.random.default_rng(seed)
    draws = np.array([diff(np.sort(rng.integers(0, n, n))) for _ in range(resamples)])
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return MapDifference(diff(np.arange(n)), float(low), float(high), level, resamples)


def check_label_names(labels: Sequence[str], n_columns: int) -> list[str]:
    """Check that there is one unique name per column and return them as a list.

    Raises:
        DataError: Wrong count or repeated names.
    """
    names = [str(name) for name in labels]
    if len(names) != n_columns:
        raise DataError(
            f"Got {len(names)} label names for {n_columns} score columns",
            fix="pass exactly one name per column, in column order",
        )
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"Label names repeat: {dupes[:5]}", fix="give every column a unique name")
    return names


def ap_by_label(scores: ArrayLike, targets: ArrayLike, labels: Sequence[str]) -> dict[str, float]:
    """Map each label name to its AP (fraction in [0, 1]), in column order.

    Args:
        scores: Images × labels scores.
        targets: Same shape, +1 / -1 / 0.
        labels: One unique name per column.

    Returns:
        ``{label: AP}``.

    Raises:
        DataError: Bad arrays, or the names do not match the columns.
    """
    ap = per_label_ap(scores, targets)
    return dict(zip(check_label_names(labels, ap.size), ap.tolist(), strict=True))


def _check_ks(ks: Sequence[int], n_labels: int) -> list[int]:
    out = [int(k) for k in ks]
    if not out:
        raise DataError("No K given for F1@K", fix="pass at least one K, e.g. (3, 5)")
    for k in out:
        if k < 1 or k > n_labels:
            raise DataError(
                f"K = {k} is not between 1 and the number of evaluated labels ({n_labels})",
                why="top-K marks K distinct labels per image",
                fix=f"choose K <= {n_labels}",
            )
    return out


def _top_k_from_order(order: NDArray[np.intp], t: TargetArray, k: int) -> TopKResult:
    hits = np.take_along_axis(t, order[:, :k], axis=1) == 1
    tp = int(hits.sum())
    n_predicted = t.shape[0] * k
    n_positive = int((t == 1).sum())
    precision = tp / n_predicted
    recall = tp / n_positive if n_positive else 0.0  # the reference divides by zero here (NaN)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return TopKResult(k, tp, n_predicted, n_positive, precision, recall, f1)


def _rank_columns(s: FloatArray) -> NDArray[np.intp]:
    # Stable argsort of the negated scores: labels in descending score, ties in column order.
    return np.argsort(-s, axis=1, kind="stable")


def top_k(scores: ArrayLike, targets: ArrayLike, k: int) -> TopKResult:
    """Micro top-K precision, recall and F1 over all images (§8.3), as fractions.

    Args:
        scores: Images × labels scores.
        targets: Same shape, +1 / -1 / 0.
        k: Labels predicted per image.

    Returns:
        The counts and rates.

    Raises:
        DataError: Bad arrays, or ``k`` outside 1..n_labels.
    """
    s, t = validate_inputs(scores, targets)
    (k,) = _check_ks([k], s.shape[1])
    return _top_k_from_order(_rank_columns(s), t, k)


def evaluate(
    scores: ArrayLike, targets: ArrayLike, ks: Sequence[int] = DEFAULT_KS, *, open_images: bool = False
) -> dict[str, float]:
    """mAP, F1@K, P@K and R@K in percent, with the MKT protocol or its Open Images variant.

    Args:
        scores: Images × labels scores, the columns being exactly the evaluated label set.
        targets: Same shape, +1 / -1 / 0.
        ks: The K values for the top-K metrics.
        open_images: Apply the Open Images variant (§8.6): drop images without a +1, average
            over classes with a non-zero annotation, and add ``mAP_weighted``.

    Returns:
        ``{"mAP": ..., "F1@3": ..., "P@3": ..., "R@3": ..., ...}`` in percent (0-100), keys in
        that order for each K; plus ``"mAP_weighted"`` with ``open_images``.

    Raises:
        DataError: Bad arrays, a bad K, or (Open Images) no image with a positive.

    Example:
        >>> evaluate([[0.9, 0.1], [0.2, 0.8]], [[1, -1], [-1, 1]], ks=(1,))["mAP"]
        100.0
    """
    s, t = validate_inputs(scores, targets)
    ks = _check_ks(ks, s.shape[1])
    if open_images:
        keep = (t == 1).any(axis=1)
        if not keep.any():
            raise DataError(
                "No image has a positive label in the evaluated label set",
                why="the Open Images protocol drops images without a +1",
                fix="check the targets, or evaluate without open_images",
            )
        s, t = s[keep], t[keep]
    ap = np.array([_ap_column(s[:, c], t[:, c]) for c in range(s.shape[1])], dtype=np.float64)
    result: dict[str, float] = {}
    if open_images:
        annotated = (t != 0).any(axis=0)
        n_pos = (t == 1).sum(axis=0)
        result["mAP"] = 100.0 * float(ap[annotated].mean())
        # n_pos > 0 somewhere because every kept image has a +1.
        result["mAP_weighted"] = 100.0 * float(np.sum(n_pos * ap) / np.sum(n_pos))
    else:
        result["mAP"] = 100.0 * float(ap.mean())
    order = _rank_columns(s)
    for k in ks:
        r = _top_k_from_order(order, t, k)
        result[f"F1@{k}"] = 100.0 * r.f1
        result[f"P@{k}"] = 100.0 * r.precision
        result[f"R@{k}"] = 100.0 * r.recall
    return result


def _check_seen(labels: Sequence[str], seen: ArrayLike, n_columns: int) -> NDArray[np.bool_]:
    check_label_names(labels, n_columns)
    mask = np.asarray(seen)
    if mask.dtype != np.bool_ or mask.shape != (n_columns,):
        raise DataError(
            f"The seen mask must be {n_columns} booleans, one per label; got dtype {mask.dtype}, shape {mask.shape}",
            fix="pass e.g. np.array([name in seen_names for name in labels])",
        )
    return mask


def evaluate_zsl(
    scores: ArrayLike,
    targets: ArrayLike,
    labels: Sequence[str],
    seen: ArrayLike,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    open_images: bool = False,
) -> dict[str, float]:
    """Zero-shot evaluation: the metrics of :func:`evaluate` on the unseen labels only.

    The score columns are taken as given. In the MKT scoring mode scores are L2-normalised over
    the scored label set (docs/method.md §2.3), so ZSL numbers are only comparable with the
    published ones when the caller has scored **the unseen labels as their own vocabulary**
    (NUS-WIDE's ``prediction_81``, §8.4), not sliced them out of a GZSL pass. Either pass those
    unseen-only scores (one column per unseen label, in label order) or a full-width matrix
    whose unseen columns hold them. Vocabulary-independent (calibrated-mode) scores can simply
    be the full-width matrix.

    Args:
        scores: Images × labels (full width) or images × unseen labels.
        targets: Images × labels (full width), +1 / -1 / 0.
        labels: One unique name per target column.
        seen: Boolean mask over ``labels``; False marks the unseen (evaluated) labels.
        ks: The K values (each at most the number of unseen labels).
        open_images: Apply the Open Images variant (§8.6) on the unseen label set.

    Returns:
        As :func:`evaluate`, over the unseen columns.

    Raises:
        DataError: Mismatched shapes, names or mask, or no unseen label.
    """
    t = np.asarray(targets)
    s = np.asarray(scores)
    if t.ndim != 2:
        raise DataError(f"Targets must be 2-D (images × labels); got {t.ndim}-D")
    unseen = ~_check_seen(labels, seen, t.shape[1])
    n_unseen = int(unseen.sum())
    if n_unseen == 0:
        raise DataError("No unseen label: every label is marked seen", fix="use evaluate_gzsl for this label set")
    if s.ndim == 2 and s.shape[1] == t.shape[1]:
        s = s[:, unseen]
    elif s.ndim != 2 or s.shape[1] != n_unseen:
        raise DataError(
            f"Scores have shape {s.shape}; expected {t.shape[0]} rows and {t.shape[1]} (all labels) "
            f"or {n_unseen} (unseen labels) columns"
        )
    return evaluate(s, t[:, unseen], ks, open_images=open_images)


def evaluate_gzsl(
    scores: ArrayLike,
    targets: ArrayLike,
    labels: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    open_images: bool = False,
) -> dict[str, float]:
    """Generalised zero-shot evaluation: :func:`evaluate` over all labels, seen and unseen.

    In the MKT scoring mode the scores must come from one pass over the whole vocabulary
    (NUS-WIDE's ``prediction_1006``, §8.4).

    Args:
        scores: Images × labels scores over the full vocabulary.
        targets: Same shape, +1 / -1 / 0.
        labels: One unique name per column (checked against the width).
        ks: The K values.
        open_images: Apply the Open Images variant (§8.6).

    Returns:
        As :func:`evaluate`.

    Raises:
        DataError: Mismatched shapes or names.
    """
    s, t = validate_inputs(scores, targets)
    check_label_names(labels, s.shape[1])
    return evaluate(s, t, ks, open_images=open_images)
