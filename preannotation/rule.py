"""The decision rule: show the tags whose probability reaches the break-even point.

The expected cost of a pre-annotation is separable over tags (:func:`expected_cost`): a shown
tag costs ``(1 - p) · c_remove`` in expectation, a hidden one ``p · c_add``. Each tag's better
choice is therefore independent of the others, and showing exactly the tags with
``p >= c_remove / (c_add + c_remove)`` minimises the expected edits among all subsets of tags.
Under a cap of ``k`` shown tags the best subset is the ``k`` most probable of those: the gain of
showing a tag, ``p · (c_add + c_remove) - c_remove``, grows with ``p``.

Probabilities must be calibrated for the rule to mean what it says: a model that calls a tag
``p = 0.6`` when it is right 30% of the time makes every one of those tags cost more than it
saves. :mod:`preannotation.recalibration` and :mod:`preannotation.guard` are there for that.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from preannotation.costs import EditCosts, PreannotationError

__all__ = ["expected_cost", "probabilities_of", "scratch_cost", "show_mask"]

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


def probabilities_of(values: ArrayLike) -> Floats:
    """``values`` as a float64 array of probabilities.

    Raises:
        PreannotationError: A value is NaN or outside [0, 1].
    """
    p = np.asarray(values, dtype=np.float64)
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        bad = p[~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))]
        raise PreannotationError(
            "probabilities must be finite numbers in [0, 1]",
            why=f"got {bad.size} other values, e.g. {float(bad[0])!r}",
            fix="pass calibrated probabilities, not raw model scores",
        )
    return p


def show_mask(
    probabilities: ArrayLike,
    costs: EditCosts | None = None,
    *,
    max_tags: int | None = None,
    suppressed: ArrayLike | None = None,
    threshold: float | ArrayLike | None = None,
) -> Bools:
    """Which tags to show: ``p >= break-even``, not suppressed, at most ``max_tags`` (most probable).

    Args:
        probabilities: ``(n_tags,)`` or ``(n_images, n_tags)`` calibrated probabilities.
        costs: The edit costs; equal costs (break-even 0.5) when None.
        max_tags: Show at most this many tags per image (the most probable); no cap when None.
        suppressed: Booleans broadcastable to ``probabilities``: tags never shown (the guard's).
        threshold: Replaces the break-even point (a team's explicit ``model_threshold``): one
            value, or values broadcastable to ``probabilities`` (one per tag: a per-tag cut such
            as a tag's own ``model_threshold`` or its own costs' break-even).

    Returns:
        Booleans of the shape of ``probabilities``.

    Raises:
        PreannotationError: Probabilities outside [0, 1], or a negative cap.
    """
    p = probabilities_of(probabilities)
    cut = (costs or EditCosts()).break_even if threshold is None else np.asarray(threshold, dtype=np.float64)
    show = np.asarray(p >= cut, dtype=bool)
    if show.shape != p.shape:
        raise PreannotationError(
            f"thresholds of shape {np.shape(cut)} do not broadcast to probabilities of shape {p.shape}",
            fix="pass one threshold, or one per tag",
        )
    if suppressed is not None:
        show &= ~np.broadcast_to(np.asarray(suppressed, dtype=bool), p.shape)
    if max_tags is None:
        return show
    if max_tags < 0:
        raise PreannotationError(f"max_tags={max_tags} is negative", fix="use max_tags >= 0, or None for no cap")
    rows = show.reshape(-1, p.shape[-1]) if p.ndim else show.reshape(1, 1)
    probs = p.reshape(rows.shape)
    for r in range(rows.shape[0]):
        chosen = np.flatnonzero(rows[r])
        if chosen.size > max_tags:
            # Most probable first; ties keep vocabulary order (a stable sort).
            keep = chosen[np.argsort(-probs[r, chosen], kind="stable")[:max_tags]]
            rows[r] = False
            rows[r, keep] = True
    return rows.reshape(p.shape)


def expected_cost(probabilities: ArrayLike, shown: ArrayLike, costs: EditCosts | None = None) -> float:
    """Expected cost of correcting a pre-annotation that shows ``shown``.

    ``Σ_shown (1 - p) · c_remove + Σ_hidden p · c_add`` over every entry (images and tags).
    """
    c = costs or EditCosts()
    p = probabilities_of(probabilities)
    s = np.broadcast_to(np.asarray(shown, dtype=bool), p.shape)
    return float(np.sum(np.where(s, (1.0 - p) * c.remove, p * c.add)))


def scratch_cost(probabilities: ArrayLike, costs: EditCosts | None = None) -> float:
    """Expected cost of labeling from scratch: one add per true tag, ``Σ p · c_add``."""
    c = costs or EditCosts()
    return float(np.sum(probabilities_of(probabilities)) * c.add)
