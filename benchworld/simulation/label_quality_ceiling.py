"""How good must the scorer be for the label review to find most corrupted tasks?

The label-quality check (:func:`benchworld.simulation.active.simulate_label_quality`) measures the
review with the benchmark's own model. This asks the counterfactual: the same tasks, the same
corrupting annotator, the same review (:func:`assistant.label_quality.review_labels`), but scores
from synthetic models of chosen quality. It trains nothing (about 2 minutes per seed on 2 cores,
mostly the review's cross-fitted stacking).

**The synthetic scorer** of separation ``s`` gives tag ``j`` of image ``i`` the logit
``s · a_j · y_ij + e_ij``, where ``y_ij`` is the true tag (+1 / -1), ``e_ij`` standard normal noise
and ``a_j`` a per-label difficulty drawn uniformly from [0.3, 1.7] (labels differ: some are
seen well, some hardly at all); the score is its sigmoid, with one threshold 0.5 for every label
(the review's stacking re-calibrates each label anyway). A larger ``s`` is a better model; each
point reports the mAP of its scores against the truth, so it can be read against a real model's.
Every separation reuses the same noise draws, so the points differ by the separation alone. The
errors are independent per tag, unlike a real model's, whose errors are shared by similar images
and labels, so the curve is a guide to the order of magnitude, not an exact bound; on the
benchmark (seeds 0-2) the real model finds about as many as a synthetic scorer of its mAP.

**The tasks** are exactly those of the label-quality check with random selection: the first
``budget`` pool images of the seed's slice of the train stream, annotated in pool order, round by
round, over the options of each round (the novel labels from the round that adds them), by a
:class:`~benchworld.simulation.active.CorruptingAnnotator` with the same seed. The corrupted tasks
are therefore the same ones the real check reviews.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from assistant.corrections import AnnotatedImage, correction_targets
from assistant.errors import ConfigError
from assistant.evaluate import per_label_ap
from assistant.label_quality import review_labels
from assistant.labels import LabelSet
from benchworld.simulation.active import ActiveLearningConfig, CorruptingAnnotator
from benchworld.simulation.annotator import TeamAnnotator, render_labeled
from benchworld.simulation.loop import SimulationProgress
from benchworld.world.config import Stream

__all__ = ["DEFAULT_SEPARATIONS", "CeilingPoint", "label_quality_ceiling"]

#: Separations of the synthetic scorers: from about the benchmark model's mAP to a near-perfect one.
DEFAULT_SEPARATIONS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
_DIFFICULTY = (0.3, 1.7)


@dataclass(frozen=True)
class CeilingPoint:
    """The review's result with one synthetic scorer, summed over seeds.

    Attributes:
        separation: The scorer's separation ``s`` (module docstring).
        map: Mean over seeds of the scores' mAP (percent) against the truth of the reviewed tasks.
        found: Corrupted tasks among the flagged ones, all seeds.
        corrupted: Corrupted tasks, all seeds.
        flagged: Flagged tasks, all seeds.
        recall: ``found / corrupted``.
        found_per_seed: ``found`` of each seed, in seed order.
    """

    separation: float
    map: float
    found: int
    corrupted: int
    flagged: int
    recall: float
    found_per_seed: tuple[int, ...]


@dataclass(frozen=True)
class _Tasks:
    """One seed's reviewed tasks: annotations (as targets), truth and which are corrupted."""

    labels: tuple[str, ...]
    targets: NDArray[np.int8]
    truth: NDArray[np.int8]
    corrupted: NDArray[np.bool_]


def _tasks(cfg: ActiveLearningConfig, seed: int, fraction: float) -> _Tasks:
    sim = cfg.for_seed(seed)
    pool = render_labeled(Stream.TRAIN, cfg.budget, sim.world, first=seed * cfg.pool_images)
    # The same annotators as the label-quality check: world v2's team (without shown predictions
    # here, so no automation-bias errors), world v1's uniform corruption.
    annotator: CorruptingAnnotator | TeamAnnotator
    if sim.world.annotators:
        annotator = TeamAnnotator(pool, sim.world.annotators, seed=seed)
    else:
        annotator = CorruptingAnnotator(pool, fraction=fraction, seed=seed)
    options = list(sim.options())
    notes: list[AnnotatedImage] = []
    for r in range(1, cfg.rounds + 1):
        if r == sim.first_novel_round:
            options += [n for n in sim.novel_labels if n not in options]
        first = (r - 1) * cfg.per_round
        notes += [annotator.annotate(i, options, ()) for i in range(first, first + cfg.per_round)]
    labels = LabelSet(tuple(options))
    rows = np.array([int(n.key) for n in notes], dtype=np.int64)
    return _Tasks(
        labels=tuple(labels),
        targets=correction_targets(labels, notes),
        truth=pool.targets(list(labels))[rows],
        corrupted=np.array([n.key in annotator.corrupted for n in notes], dtype=bool),
    )


def _synthetic_scores(truth: NDArray[np.int8], separation: float, rng: np.random.Generator) -> NDArray[np.float64]:
    difficulty = rng.uniform(*_DIFFICULTY, size=truth.shape[1])
    logits = separation * difficulty * truth.astype(np.float64) + rng.standard_normal(truth.shape)
    scores: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logits))
    return scores


def label_quality_ceiling(
    cfg: ActiveLearningConfig,
    *,
    fraction: float = 0.05,
    flag_fraction: float = 0.05,
    separations: Sequence[float] = DEFAULT_SEPARATIONS,
    progress: SimulationProgress | None = None,
) -> list[CeilingPoint]:
    """Review the label-quality check's tasks with synthetic scorers of increasing quality.

    Args:
        cfg: The tasks: ``seeds``, ``budget``, ``rounds``, ``pool_images`` and the simulation's
            options, as for :func:`~benchworld.simulation.active.simulate_label_quality`.
        fraction: Share of tasks the annotator corrupts.
        flag_fraction: Share of tasks the review flags.
        separations: The synthetic scorers' separations (module docstring), each > 0.
        progress: ``progress(what, done, total)`` over the reviews (one per separation and seed).

    Returns:
        One point per separation, in the given order.

    Raises:
        ConfigError: A separation is not positive, or the settings are unusable.
    """
    cfg.check()
    if not separations or any(s <= 0 for s in separations):
        raise ConfigError(f"separations must be positive, got {list(separations)}", fix="use e.g. 0.5,1,2,4")
    report = progress or (lambda what, done, total: None)
    tasks: list[_Tasks] = []
    for seed in cfg.seeds:
        report(f"annotating the tasks of seed {seed}", len(tasks), len(cfg.seeds))
        tasks.append(_tasks(cfg, seed, fraction))
    points: list[CeilingPoint] = []
    total = len(separations) * len(tasks)
    for separation in separations:
        maps: list[float] = []
        found: list[int] = []
        flagged = 0
        for seed, t in zip(cfg.seeds, tasks, strict=True):
            scores = _synthetic_scores(t.truth, separation, np.random.default_rng([seed, 11]))
            has_positive = (t.truth > 0).any(axis=0)
            maps.append(100.0 * float(per_label_ap(scores, t.truth)[has_positive].mean()))
            thresholds = np.full(len(t.labels), 0.5)
            chosen = review_labels(scores, t.targets, list(t.labels), thresholds).flagged(flag_fraction)
            found.append(int(t.corrupted[chosen].sum()))
            flagged += int(chosen.size)
            report("reviews", len(points) * len(tasks) + len(found), total)
        corrupted = int(sum(t.corrupted.sum() for t in tasks))
        points.append(
            CeilingPoint(
                separation=float(separation),
                map=float(np.mean(maps)),
                found=sum(found),
                corrupted=corrupted,
                flagged=flagged,
                recall=sum(found) / corrupted if corrupted else float("nan"),
                found_per_seed=tuple(found),
            )
        )
    return points
