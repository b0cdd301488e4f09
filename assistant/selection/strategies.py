"""The registered selection strategies. Each says what it favours; all are seeded and pure numpy.

========== ======================================================================================
random     a uniform sample: the baseline every other strategy must beat, and the one that
           never biases the data
uncertainty images whose most borderline tags sit nearest their calibrated thresholds: the
           corrections that move decisions
entropy    images whose calibrated scores are ambiguous over the whole vocabulary (mean binary
           entropy), whatever the thresholds
novelty    images likely to show the novel tags (no annotations yet), taken in turn per tag, so
           each new tag gets positives to train on
diversity  images farthest from everything labeled or chosen (k-center greedy on image
           embeddings): coverage of the image space, blind to the model's doubts
hybrid     uncertain images that are also far from the labeled ones: k-center greedy weighted by
           uncertainty over the most uncertain candidates; while the model is uncalibrated,
           the most typical image of each of k clusters instead (TypiClust)
saving     the hybrid, with each image's uncertainty weighted by the share of its edits that
           pre-annotation is expected to save (the agent's default): informative images that
           annotators also label faster
balanced   the most uncertain image for each label in turn, the labels whose boundary the fewest
           pool images sit at first: an equal share of the batch per label, whatever its
           frequency (class-balanced selection, BASE, arXiv 2111.12880)
========== ======================================================================================

The hybrid follows the "filter, then diversify" recipe of cluster-margin (Citovsky et al. 2021)
and diverse mini-batch active learning (Zhdanov 2019): the ``candidates_per_pick · k`` most
uncertain images (10·k, their default) are the candidates; among them, each pick maximises
``uncertainty · distance to the nearest labeled or already-chosen image``. A batch of the k most
uncertain images alone tends to be k near-duplicates of one confusing kind (an uncertain "zebra
on sand" and its twins); the distance term spreads the batch, and the uncertainty weight keeps
it informative. BADGE (Ash et al. 2020) gets the same effect from k-means++ on gradient
embeddings, whose norms grow with uncertainty; weighting explicit image embeddings does it
without per-label gradients, which a 10⁶ x 10³ pool could not hold.

Before the model in service has been calibrated on any annotation (``SelectionPool.calibrated``
is False: the thresholds are a prior's, ``Calibrator.is_prior``), "near the threshold" is noise,
and the hybrid takes a *typical* batch instead (TypiClust, Hacohen et al. 2022,
:mod:`assistant.selection.typical`): k-means into ``labeled + k`` clusters, and the densest image
of each of the ``k`` largest clusters the labeled images cover least. Farthest-point diversity,
its cold start until then, picks outliers first by construction. In the active-learning
simulation (``assistant simulate al``, 100 labels a round) the first 100 labels gave, on the
world's validation stream (seed 0), 36.9 mAP with farthest-point diversity, 37.6 with random
sampling and 39.2 with a typical batch; on the test stream (3 seeds) the hybrid went from 0.8
points below random sampling there to 0.6 above. Its later rounds stay level with random
sampling within noise and do not reach random's final mAP with fewer labels; oracles that pick by
the true loss or the true tag count (:mod:`benchworld.simulation.oracles`) do no better there
(docs/active-learning.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

from assistant.errors import ConfigError
from assistant.selection.kcenter import PROJECT_DIM, k_center_greedy
from assistant.selection.pool import SelectionPool
from assistant.selection.registry import Selection, Strategy, register_strategy
from assistant.selection.typical import typical_picks

__all__ = [
    "SAVING_FLOOR",
    "Balanced",
    "Diversity",
    "Entropy",
    "Hybrid",
    "Novelty",
    "RandomSampling",
    "Saving",
    "Uncertainty",
]

logger = logging.getLogger(__name__)

#: The ``saving`` strategy's weight of an image with no expected saving, against 1 + saving for
#: the others: a tenth keeps uncertain images with nothing to show in the running.
SAVING_FLOOR: Final = 0.1


def _top(values: NDArray[np.floating], valid: NDArray[np.bool_], k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` largest valid values, largest first (ties: lower index first)."""
    scores = np.where(valid, values.astype(np.float64), -np.inf)
    k = min(k, int(valid.sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    # A stable sort of the negated scores over sorted candidates: equal scores keep index order.
    part = np.sort(part)
    order = np.argsort(-scores[part], kind="stable")
    return part[order].astype(np.int64)


@register_strategy
class RandomSampling(Strategy):
    """A uniform sample of the pool (the baseline)."""

    name = "random"
    favours = "nothing: a uniform random sample, the unbiased baseline"

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        k = self._check(pool, k)
        rows = np.nonzero(pool.valid)[0]
        chosen = np.random.default_rng(self.seed).choice(rows, size=k, replace=False).astype(np.int64)
        return Selection(self.name, chosen, np.zeros(k), tuple("random sample" for _ in range(k)))


@register_strategy
class Uncertainty(Strategy):
    """The images with the highest uncertainty (tags nearest their thresholds)."""

    name = "uncertainty"
    favours = "images whose most borderline tags sit nearest their calibrated thresholds"

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        chosen = _top(pool.uncertainty, pool.valid, self._check(pool, k))
        scores = pool.uncertainty[chosen].astype(np.float64)
        reasons = tuple(
            f"uncertainty {s:.2f}: borderline {pool.borderline(i)}" for i, s in zip(chosen, scores, strict=True)
        )
        return Selection(self.name, chosen, scores, reasons)


@register_strategy
class Entropy(Strategy):
    """The images with the highest mean binary entropy over the vocabulary."""

    name = "entropy"
    favours = "images whose calibrated scores are ambiguous over the whole vocabulary (mean binary entropy)"

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        chosen = _top(pool.entropy, pool.valid, self._check(pool, k))
        scores = pool.entropy[chosen].astype(np.float64)
        reasons = tuple(
            f"entropy {s:.3f} bits per tag; most borderline {pool.borderline(i)}"
            for i, s in zip(chosen, scores, strict=True)
        )
        return Selection(self.name, chosen, scores, reasons)


@register_strategy
class Novelty(Strategy):
    """Images likely to show the novel tags, one tag after another.

    Each novel tag ranks the pool by its calibrated score; the picks go round the tags, each
    taking its best image not chosen yet. A tag needs a few positives before a round can train
    it (5 by default), and a plain top-k over the summed scores would spend the batch on the
    one novel tag the zero-shot model scores highest. Without novel tags it falls back to
    :class:`Uncertainty`, and says so in the reasons.
    """

    name = "novelty"
    favours = "images likely to show the novel tags (no annotations yet), in turn per tag"

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        k = self._check(pool, k)
        if pool.novel_scores is None or not pool.novel_labels:
            fallback = Uncertainty(self.seed).select(pool, k)
            why = tuple(f"no novel tags, so by uncertainty: {r}" for r in fallback.reasons)
            return Selection(self.name, fallback.indices, fallback.scores, why)
        n_novel = len(pool.novel_labels)
        # Each tag's k best images cover any round-robin of k picks.
        rankings = [_top(pool.novel_scores[:, j], pool.valid, k) for j in range(n_novel)]
        cursors = [0] * n_novel
        taken: set[int] = set()
        chosen: list[int] = []
        scores: list[float] = []
        reasons: list[str] = []
        while len(chosen) < k:
            progressed = False
            for j in range(n_novel):
                ranking = rankings[j]
                while cursors[j] < ranking.size and int(ranking[cursors[j]]) in taken:
                    cursors[j] += 1
                if cursors[j] >= ranking.size or len(chosen) >= k:
                    continue
                row = int(ranking[cursors[j]])
                p = float(pool.novel_scores[row, j])
                taken.add(row)
                chosen.append(row)
                scores.append(p)
                reasons.append(f"likely novel tag '{pool.novel_labels[j]}' ({p:.2f}, no annotations yet)")
                progressed = True
            if not progressed:
                break
        return Selection(self.name, np.asarray(chosen, dtype=np.int64), np.asarray(scores), tuple(reasons))


@register_strategy
class Diversity(Strategy):
    """k-center greedy on image embeddings, starting from the labeled images.

    Args:
        seed: Seeds the projection and the first pick when nothing is labeled.
        project_dim: Embeddings with more dimensions are randomly projected to this many.
    """

    name = "diversity"
    favours = "images farthest from everything labeled or chosen (k-center greedy on image embeddings)"
    needs_embeddings = True

    def __init__(self, seed: int = 0, project_dim: int = PROJECT_DIM) -> None:
        super().__init__(seed)
        self.project_dim = project_dim

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        k = self._check(pool, k)
        assert pool.embeddings is not None  # checked by _check
        chosen, gaps = k_center_greedy(
            pool.embeddings,
            k,
            initial_centers=pool.labeled_embeddings,
            candidates=pool.valid,
            seed=self.seed,
            project_dim=self.project_dim,
        )
        reasons = tuple(_gap_reason(g) for g in gaps)
        return Selection(self.name, chosen, np.where(np.isfinite(gaps), gaps, 0.0), reasons)


@register_strategy
class Hybrid(Strategy):
    """Uncertainty-weighted k-center greedy over the most uncertain candidates (module docstring).

    Uncalibrated (a cold start), it takes the most typical image of each of ``k`` clusters.

    Args:
        seed: Seeds the projection (and the clustering of a cold start).
        candidates_per_pick: Candidates are the ``candidates_per_pick · k`` most uncertain images
            (10 as in Zhdanov 2019; 1 degenerates to :class:`Uncertainty`).
        project_dim: Embeddings with more dimensions are randomly projected to this many.
    """

    name = "hybrid"
    favours = (
        "uncertain images that are also far from the labeled ones (uncertainty-weighted k-center); "
        "before calibration, one typical image per cluster"
    )
    needs_embeddings = True

    def __init__(self, seed: int = 0, candidates_per_pick: float = 10.0, project_dim: int = PROJECT_DIM) -> None:
        super().__init__(seed)
        if candidates_per_pick < 1:
            raise ConfigError(f"candidates_per_pick must be >= 1, got {candidates_per_pick}", fix="use e.g. 10")
        self.candidates_per_pick = candidates_per_pick
        self.project_dim = project_dim

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        k = self._check(pool, k)
        assert pool.embeddings is not None  # checked by _check
        if not pool.calibrated:
            return self._typical(pool, k)
        rows = _top(pool.uncertainty, pool.valid, int(np.ceil(self.candidates_per_pick * k)))
        # Only the candidates' embeddings are touched: O(candidates), not O(pool), per pick.
        picked, gaps = k_center_greedy(
            pool.embeddings[rows],
            k,
            initial_centers=pool.labeled_embeddings,
            weights=pool.uncertainty[rows],
            seed=self.seed,
            project_dim=self.project_dim,
        )
        chosen = rows[picked]
        u = pool.uncertainty[chosen].astype(np.float64)
        scores = u * np.where(np.isfinite(gaps), gaps, 1.0)
        reasons = tuple(
            f"uncertainty {ui:.2f} ({pool.borderline(int(i))}), {_gap_reason(g)}"
            for i, ui, g in zip(chosen, u, gaps, strict=True)
        )
        return Selection(self.name, chosen, scores, reasons)

    def _typical(self, pool: SelectionPool, k: int) -> Selection:
        # Cold start: before any calibration the thresholds are a prior's guess, and "near the
        # threshold" is noise; typical images of the clusters are the better first batch.
        assert pool.embeddings is not None  # checked by _check
        picks = typical_picks(
            pool.embeddings,
            k,
            initial_centers=pool.labeled_embeddings,
            candidates=pool.valid,
            seed=self.seed,
            project_dim=self.project_dim,
        )
        reasons = tuple(
            "uncalibrated model, so by typicality: "
            + (
                f"the only image of its cluster ({lab} labeled)"
                if size == 1
                else f"the most typical of a cluster of {size} images ({lab} labeled)"
            )
            for size, lab in zip(picks.cluster_size.tolist(), picks.cluster_labeled.tolist(), strict=True)
        )
        return Selection(self.name, picks.indices, picks.typicality, reasons)


@register_strategy
class Saving(Hybrid):
    """The hybrid over uncertainty weighted by the expected saving of pre-annotation.

    An image's weight is ``uncertainty · (SAVING_FLOOR + saving)``, where ``saving`` is the share
    of its from-scratch edits that the break-even rule's pre-annotation is expected to save
    (:func:`~assistant.selection.image_saving`, from the pool's break-even point). Uncertainty
    alone puts first the images the model is least sure of, where pre-annotation helps least; the
    weight keeps the hybrid's filter-then-diversify recipe but prefers, among informative images,
    those whose pre-annotations save work. The floor keeps images with nothing to show (most of
    them under a young model) in play. Selected on the agent simulation's tuning seeds
    (docs/preannotation.md); a pool built without a break-even point is chosen as the hybrid
    chooses.
    """

    name = "saving"
    favours = (
        "uncertain, diverse images whose pre-annotations are expected to save edits (the hybrid, "
        "its uncertainty weighted by the expected saving)"
    )

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        if pool.saving is None:
            return super().select(pool, k)
        weighted = replace(pool, uncertainty=(pool.uncertainty * (SAVING_FLOOR + pool.saving)).astype(np.float32))
        chosen = super().select(weighted, k)
        if not pool.calibrated:
            return Selection(self.name, chosen.indices, chosen.scores, chosen.reasons)
        reasons = tuple(
            f"{reason}, expected saving {float(pool.saving[i]):.0%}"
            for i, reason in zip(chosen.indices.tolist(), chosen.reasons, strict=True)
        )
        return Selection(self.name, chosen.indices, chosen.scores, reasons)


@register_strategy
class Balanced(Strategy):
    """Class-balanced selection: the batch shared equally among the labels, rare ones first.

    "Active Learning at the ImageNet Scale" (Emam et al. 2021, arXiv 2111.12880) found that
    popular strategies fail to beat random sampling on imbalanced data because they pick the
    frequent classes, and that balanced selection (BASE) wins: every class gets an equal share of
    the batch, each with its samples nearest that class's decision boundary. In a multi-label
    pool each image is counted for the label whose calibrated score sits nearest its threshold
    (its most borderline tag, ``SelectionPool.top_tag``). The labels take turns, those with the
    fewest such images first (the rare labels, whose few boundary images a frequency-blind
    strategy rarely reaches), each taking its most uncertain image not chosen yet.
    """

    name = "balanced"
    favours = "an equal share of the batch per label, rare labels first, each label's most uncertain image"

    def select(self, pool: SelectionPool, k: int) -> Selection:
        """See :meth:`Strategy.select`."""
        k = self._check(pool, k)
        rows = np.nonzero(pool.valid)[0]
        tags = pool.top_tag[rows].astype(np.int64)
        # Per label, its images by falling uncertainty (ties: lower row first).
        queues: dict[int, list[int]] = {}
        for row in rows[np.lexsort((rows, -pool.uncertainty[rows].astype(np.float64)))].tolist():
            queues.setdefault(int(pool.top_tag[row]), []).append(int(row))
        counts = np.bincount(tags, minlength=len(pool.labels))
        turn = sorted(queues, key=lambda j: (int(counts[j]), j))
        chosen: list[int] = []
        reasons: list[str] = []
        cursor = dict.fromkeys(turn, 0)
        while len(chosen) < k:
            for j in turn:
                if len(chosen) >= k or cursor[j] >= len(queues[j]):
                    continue
                row = queues[j][cursor[j]]
                cursor[j] += 1
                chosen.append(row)
                reasons.append(
                    f"balanced turn of '{pool.labels[j]}' ({int(counts[j])} pool images at its boundary): "
                    f"borderline {pool.borderline(row)}"
                )
        indices = np.asarray(chosen, dtype=np.int64)
        return Selection(self.name, indices, pool.uncertainty[indices].astype(np.float64), tuple(reasons))


def _gap_reason(gap: float) -> str:
    if not np.isfinite(gap):
        return "first pick, nothing labeled yet"
    return f"{gap:.2f} from the nearest labeled or chosen image"
