"""What a selection strategy sees of an unlabeled pool: per-image statistics and image embeddings.

A pool of 1,000,000 images over a 1,000-label vocabulary is 10⁹ calibrated scores (4 GB in
float32): too much to hold, and no strategy needs it. :class:`PoolBuilder` therefore reduces each
chunk of scores to a few numbers per image as the chunks arrive (from the workers' feature cache,
in any order), and keeps the global image embeddings in float16 for the diversity strategies.
Memory is ``N × (2·D + 17 + 2·n_novel)`` bytes: 1.0 GB for 10⁶ ViT-B images (D = 512) and a
handful of novel labels, whatever the vocabulary size.

**Per-tag uncertainty** is the score's closeness to its calibrated threshold, normalised on each
side (the same definition as the Label Studio prediction score, ``backends/convert.py``)::

    u = 1 - |p - t| / t          when p < t
    u = 1 - |p - t| / (1 - t)    when p >= t

so ``u`` is 1 at the threshold and 0 at a score of 0 or 1. An image's **uncertainty** is the mean
of its :data:`UNCERTAIN_TOP_K` largest ``u``: the mean over every label would drown a borderline
tag among hundreds of confident absences, and the single largest makes every image of a large
vocabulary look alike. ``1 - uncertainty`` is exactly the ``score`` of the image's Label Studio
prediction, so "Prediction score, ascending" lists images in the uncertainty strategy's order.

An image's **entropy** is the mean binary entropy ``H(p) = -p·log₂p - (1-p)·log₂(1-p)`` of its
calibrated scores over the whole vocabulary: it ignores the thresholds and grows with every
ambiguous tag, so it favours images whose content is ambiguous overall.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assistant.errors import DataError

__all__ = [
    "UNCERTAIN_TOP_K",
    "PoolBuilder",
    "SelectionPool",
    "image_entropy",
    "image_saving",
    "image_uncertainty",
    "tag_uncertainty",
]

logger = logging.getLogger(__name__)

# The same K as the Label Studio prediction score (backends/convert.py UNCERTAIN_TOP_K).
UNCERTAIN_TOP_K = 3
_EPS = 1e-6
# Rows reduced at a time: 4,096 x 65 float32 scores stay in cache (1 MB); 65,536-row blocks ran
# 2x slower on these machines.
_BLOCK_ROWS = 4_096

Floats = NDArray[np.float32]


def tag_uncertainty(probabilities: ArrayLike, thresholds: ArrayLike) -> Floats:
    """Per-tag closeness to the calibrated threshold, in [0, 1] (module docstring).

    Args:
        probabilities: ``(..., C)`` calibrated scores.
        thresholds: ``(C,)`` decision thresholds.

    Returns:
        ``u`` of the same shape, float32.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float32), 0.0, 1.0)
    t = np.asarray(thresholds, dtype=np.float32)
    span = np.where(p >= t, 1.0 - t, t)
    out: Floats = 1.0 - np.abs(p - t) / np.maximum(span, _EPS)
    return out


def image_uncertainty(probabilities: ArrayLike, thresholds: ArrayLike, top_k: int = UNCERTAIN_TOP_K) -> Floats:
    """Mean of each image's ``top_k`` largest per-tag uncertainties, ``(N,)`` (module docstring)."""
    u = tag_uncertainty(np.atleast_2d(probabilities), thresholds)
    k = min(max(1, top_k), u.shape[1])
    top = np.partition(u, u.shape[1] - k, axis=1)[:, -k:]
    out: Floats = top.mean(axis=1, dtype=np.float32)
    return out


def image_entropy(probabilities: ArrayLike) -> Floats:
    """Mean binary entropy in bits of each image's calibrated scores, ``(N,)`` in [0, 1]."""
    p = np.clip(np.atleast_2d(np.asarray(probabilities, dtype=np.float32)), _EPS, 1.0 - _EPS)
    h = -(p * np.log2(p) + (1.0 - p) * np.log2(1.0 - p))
    out: Floats = h.mean(axis=1, dtype=np.float32)
    return out


def image_saving(probabilities: ArrayLike, break_even: float) -> Floats:
    """Per image, the share of its from-scratch edits pre-annotation is expected to save, ``(N,)`` in [0, 1].

    Under the break-even rule a tag is shown when ``p >= b``; showing it saves ``p·c_add - (1 - p)
    ·c_remove = (c_add + c_remove)(p - b)`` edits on average, and labeling the image from scratch
    costs ``c_add · Σ p``. With ``c_add / (c_add + c_remove) = 1 - b`` the share saved is
    ``Σ_shown (p - b) / ((1 - b) · Σ p)``, which depends on the costs only through ``b``.

    Args:
        probabilities: ``(N, C)`` calibrated scores.
        break_even: The edit costs' break-even point (0.5 at equal costs).
    """
    p = np.atleast_2d(np.asarray(probabilities, dtype=np.float32))
    gain = np.clip(p - np.float32(break_even), 0.0, None).sum(axis=1)
    scratch = np.maximum((1.0 - break_even) * p.sum(axis=1), _EPS)
    out: Floats = np.clip(gain / scratch, 0.0, 1.0).astype(np.float32)
    return out


@dataclass(frozen=True)
class SelectionPool:
    """An unlabeled pool as the strategies see it. Build one with :class:`PoolBuilder`.

    Attributes:
        labels: The vocabulary the scores were computed over.
        uncertainty: ``(N,)`` image uncertainty in [0, 1] (module docstring).
        entropy: ``(N,)`` mean binary entropy in [0, 1].
        top_tag: ``(N,)`` index into ``labels`` of each image's most borderline tag (for reasons).
        top_prob: ``(N,)`` that tag's calibrated score.
        thresholds: ``(C,)`` the thresholds the uncertainty was measured against.
        novel_labels: Labels without annotations yet (the novelty strategy's targets).
        novel_scores: ``(N, len(novel_labels))`` float16 calibrated scores of those labels, or None.
        embeddings: ``(N, D)`` float16 global image embeddings (not normalised), or None.
        labeled_embeddings: ``(M, D)`` float16 embeddings of already labeled images, or None: the
            diversity strategies start from them, so they look for what is not labeled yet.
        valid: ``(N,)`` False for images that could not be scored (never selected).
        calibrated: Whether the thresholds come from a calibrator fitted on annotations. Before
            any (a prior, ``Calibrator.is_prior``: the default or a backbone's one global
            threshold), closeness to a threshold says little, and the hybrid strategy relies on
            diversity alone.
        saving: ``(N,)`` the share of the from-scratch edits that pre-annotating each image is
            expected to save under the break-even rule (:func:`image_saving`), or None when the
            pool was built without a break-even point.
    """

    labels: tuple[str, ...]
    uncertainty: Floats
    entropy: Floats
    top_tag: NDArray[np.int32]
    top_prob: Floats
    thresholds: Floats
    novel_labels: tuple[str, ...]
    novel_scores: NDArray[np.float16] | None
    embeddings: NDArray[np.float16] | None
    labeled_embeddings: NDArray[np.float16] | None
    valid: NDArray[np.bool_]
    calibrated: bool = True
    saving: Floats | None = None

    def __len__(self) -> int:
        return int(self.uncertainty.shape[0])

    @property
    def n_valid(self) -> int:
        """Images that can be selected."""
        return int(self.valid.sum())

    def nbytes(self) -> int:
        """Memory held by the arrays."""
        arrays = [self.uncertainty, self.entropy, self.top_tag, self.top_prob, self.valid]
        optional = (self.novel_scores, self.embeddings, self.labeled_embeddings, self.saving)
        arrays += [a for a in optional if a is not None]
        return int(sum(a.nbytes for a in arrays))

    def borderline(self, index: int) -> str:
        """``'zebra' 0.41 vs threshold 0.40``: the image's most borderline tag, for reasons."""
        j = int(self.top_tag[index])
        return f"'{self.labels[j]}' {float(self.top_prob[index]):.2f} vs threshold {float(self.thresholds[j]):.2f}"

    @classmethod
    def from_arrays(
        cls,
        probabilities: ArrayLike,
        thresholds: ArrayLike,
        labels: Sequence[str],
        *,
        novel_labels: Sequence[str] = (),
        embeddings: ArrayLike | None = None,
        labeled_embeddings: ArrayLike | None = None,
        valid: ArrayLike | None = None,
        calibrated: bool = True,
        break_even: float | None = None,
    ) -> SelectionPool:
        """A pool from in-memory arrays (small pools, tests, the simulation).

        Args:
            probabilities: ``(N, C)`` calibrated scores.
            thresholds: ``(C,)`` thresholds.
            labels: ``C`` label names.
            novel_labels: Labels without annotations yet (a subset of ``labels``).
            embeddings: ``(N, D)`` global image embeddings.
            labeled_embeddings: ``(M, D)`` embeddings of labeled images.
            valid: ``(N,)`` mask of usable rows (default: all).
            calibrated: See :attr:`SelectionPool.calibrated`.
            break_even: See :class:`PoolBuilder`.
        """
        probs = np.asarray(probabilities, dtype=np.float32)
        if probs.ndim != 2:
            raise DataError(f"pool scores must be (images, labels), got shape {probs.shape}")
        emb = None if embeddings is None else np.asarray(embeddings)
        builder = PoolBuilder(
            probs.shape[0],
            labels,
            thresholds,
            novel_labels=novel_labels,
            dim=None if emb is None else emb.shape[1],
            calibrated=calibrated,
            break_even=break_even,
        )
        rows = np.arange(probs.shape[0]) if valid is None else np.nonzero(np.asarray(valid, dtype=bool))[0]
        builder.add(rows, probs[rows], None if emb is None else emb[rows])
        return builder.build(labeled_embeddings)


class PoolBuilder:
    """Accumulates a :class:`SelectionPool` from chunks of scores, in any row order.

    Args:
        n_images: Pool size; rows are ``0 .. n_images - 1``.
        labels: The vocabulary (columns of every chunk).
        thresholds: ``(C,)`` calibrated thresholds.
        novel_labels: Labels without annotations yet (their scores are kept for novelty).
        dim: Embedding dimension, or None to keep no embeddings (no diversity strategies).
        top_k: Tags averaged into the image uncertainty.
        calibrated: See :attr:`SelectionPool.calibrated`.
        break_even: The edit costs' break-even point: with it, each image's expected saving is
            kept (:attr:`SelectionPool.saving`, the ``saving`` strategy's weight).
    """

    def __init__(
        self,
        n_images: int,
        labels: Sequence[str],
        thresholds: ArrayLike,
        *,
        novel_labels: Sequence[str] = (),
        dim: int | None = None,
        top_k: int = UNCERTAIN_TOP_K,
        calibrated: bool = True,
        break_even: float | None = None,
    ) -> None:
        self.labels = tuple(labels)
        self.calibrated = calibrated
        if break_even is not None and not 0.0 < break_even < 1.0:
            raise DataError(f"a break-even point is in (0, 1), got {break_even}", fix="use EditCosts.break_even")
        self.break_even = break_even
        self._saving = None if break_even is None else np.zeros(n_images, dtype=np.float32)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (len(self.labels),):
            raise DataError(f"{self.thresholds.shape[0]} thresholds for {len(self.labels)} labels")
        index = {name: j for j, name in enumerate(self.labels)}
        unknown = [n for n in novel_labels if n not in index]
        if unknown:
            raise DataError(f"novel labels {unknown[:5]} are not in the vocabulary", fix="pass a subset of the labels")
        self.novel_labels = tuple(dict.fromkeys(novel_labels))
        self._novel_cols = np.array([index[n] for n in self.novel_labels], dtype=np.int64)
        self.top_k = top_k
        self._inv_above = (1.0 / np.maximum(1.0 - self.thresholds, _EPS)).astype(np.float32)
        self._inv_below = (1.0 / np.maximum(self.thresholds, _EPS)).astype(np.float32)
        self._uncertainty = np.zeros(n_images, dtype=np.float32)
        self._entropy = np.zeros(n_images, dtype=np.float32)
        self._top_tag = np.zeros(n_images, dtype=np.int32)
        self._top_prob = np.zeros(n_images, dtype=np.float32)
        self._valid = np.zeros(n_images, dtype=bool)
        self._novel = np.zeros((n_images, len(self.novel_labels)), dtype=np.float16) if self.novel_labels else None
        self._emb = None if dim is None else np.zeros((n_images, dim), dtype=np.float16)

    def add(self, rows: ArrayLike, probabilities: ArrayLike, embeddings: ArrayLike | None = None) -> None:
        """Reduce one chunk: ``probabilities`` ``(n, C)`` and ``embeddings`` ``(n, D)`` of pool ``rows``."""
        idx = np.asarray(rows, dtype=np.int64)
        probs = np.asarray(probabilities, dtype=np.float32)
        if probs.shape != (idx.size, len(self.labels)):
            raise DataError(f"a chunk of {idx.size} rows came with scores of shape {probs.shape}")
        if idx.size == 0:
            return
        for start in range(0, idx.size, _BLOCK_ROWS):
            self._reduce(idx[start : start + _BLOCK_ROWS], probs[start : start + _BLOCK_ROWS])
        if self._saving is not None and self.break_even is not None:
            self._saving[idx] = image_saving(probs, self.break_even)
        if self._novel is not None:
            self._novel[idx] = probs[:, self._novel_cols]
        if self._emb is not None:
            if embeddings is None:
                raise DataError("this pool keeps embeddings, but a chunk came without them")
            # Stored as given (float16): the diversity strategies normalise the rows they use,
            # fused with their projection, so the hybrid never touches most of a large pool.
            self._emb[idx] = np.asarray(embeddings)
        self._valid[idx] = True

    def _reduce(self, idx: NDArray[np.int64], p: Floats) -> None:
        # tag_uncertainty, image_uncertainty and image_entropy fused on one cache-sized block: the
        # same numbers, 2-3x faster on 10⁶ x 65 scores than whole-chunk temporaries (measured).
        dist = p - self.thresholds  # signed distance to the threshold
        scale = np.where(dist >= 0, self._inv_above, self._inv_below)
        dist = np.abs(dist, out=dist)
        dist *= scale
        # The K largest uncertainties 1 - dist are the K smallest normalised distances.
        k = min(max(1, self.top_k), dist.shape[1])
        self._uncertainty[idx] = 1.0 - np.partition(dist, k - 1, axis=1)[:, :k].mean(axis=1)
        top = dist.argmin(axis=1)
        self._top_tag[idx] = top
        self._top_prob[idx] = p[np.arange(idx.size), top]
        q = np.clip(p, _EPS, 1.0 - _EPS)
        h = q * np.log2(q)
        q = np.subtract(1.0, q, out=q)
        h += q * np.log2(q)
        self._entropy[idx] = -h.mean(axis=1)

    def build(self, labeled_embeddings: ArrayLike | None = None) -> SelectionPool:
        """The pool (rows never added are invalid).

        Args:
            labeled_embeddings: ``(M, D)`` global embeddings of the already labeled images.
        """
        labeled = None
        if labeled_embeddings is not None:
            lab = np.asarray(labeled_embeddings, dtype=np.float16)
            labeled = lab.reshape(-1, lab.shape[-1]) if lab.size else None
        if labeled is not None and self._emb is not None and labeled.shape[1] != self._emb.shape[1]:
            raise DataError(f"labeled embeddings have {labeled.shape[1]} dimensions, the pool {self._emb.shape[1]}")
        return SelectionPool(
            labels=self.labels,
            uncertainty=self._uncertainty,
            entropy=self._entropy,
            top_tag=self._top_tag,
            top_prob=self._top_prob,
            thresholds=self.thresholds,
            novel_labels=self.novel_labels,
            novel_scores=self._novel,
            embeddings=self._emb,
            labeled_embeddings=labeled,
            valid=self._valid,
            calibrated=self.calibrated,
            saving=self._saving,
        )
