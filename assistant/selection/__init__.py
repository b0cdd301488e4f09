"""Active learning: choose which images annotators label next.

Strategies live in a registry (:func:`list_strategies`, :func:`create_strategy`); each one
documents what it favours (:func:`describe_strategies`, :mod:`assistant.selection.strategies`).
They see an unlabeled pool as per-image statistics and image embeddings
(:class:`SelectionPool`), built chunk by chunk from calibrated scores (:class:`PoolBuilder`), so
a pool of 10⁶ images fits in memory whatever the vocabulary. Everything is numpy and seeded.

Example:
    >>> from assistant.selection import SelectionPool, create_strategy
    >>> pool = SelectionPool.from_arrays(probs, thresholds, labels, embeddings=emb)  # doctest: +SKIP
    >>> chosen = create_strategy("hybrid", seed=0).select(pool, k=100)               # doctest: +SKIP
    >>> chosen.indices[:3], chosen.reasons[0]                                         # doctest: +SKIP
"""

from __future__ import annotations

from assistant.selection import strategies as _strategies  # registers the strategies
from assistant.selection.kcenter import k_center_greedy, project
from assistant.selection.pool import (
    UNCERTAIN_TOP_K,
    PoolBuilder,
    SelectionPool,
    image_entropy,
    image_saving,
    image_uncertainty,
    tag_uncertainty,
)
from assistant.selection.registry import (
    STRATEGIES,
    Selection,
    Strategy,
    create_strategy,
    describe_strategies,
    list_strategies,
    register_strategy,
)
from assistant.selection.typical import typical_picks

__all__ = [
    "STRATEGIES",
    "UNCERTAIN_TOP_K",
    "PoolBuilder",
    "Selection",
    "SelectionPool",
    "Strategy",
    "create_strategy",
    "describe_strategies",
    "image_entropy",
    "image_saving",
    "image_uncertainty",
    "k_center_greedy",
    "list_strategies",
    "project",
    "register_strategy",
    "tag_uncertainty",
    "typical_picks",
]

del _strategies
