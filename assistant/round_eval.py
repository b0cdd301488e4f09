"""How a round judges a model on the held-out split, and how it decides between two models.

Both models get the same protocol (see ``assistant.rounds``, step 3):

- **per-label AP** on raw ``cosine``-mode scores (the vocabulary-independent score that is
  served; calibration is monotone per label, so the AP is the calibrated scores' AP too);
- **mAP** over the labels with at least one positive and one negative held-out answer (a label
  without both has no AP; the MKT protocol's AP of 0 would only dilute both models alike), and
  ``mAP_seen``/``mAP_novel`` over those labels split by the *current* model's seen set;
- **F1/P/R@K**, micro top-K over the whole vocabulary on calibrated probabilities that are
  **cross-fitted**: each fold of rows is scored by a calibrator fitted on the other folds, so a
  calibrator never grades its own fitting data;
- **edits against from scratch** (:func:`heldout_effort`): the tags the pre-annotation rule
  (:func:`preannotation.show_mask`, break-even of the edit costs, at most ``max_tags`` per task)
  would show from the same cross-fitted probabilities, counted against the held-out answers: one
  remove per wrong tag shown, one add per true tag not shown, against one add per true tag from
  scratch (``edits_per_task``, ``scratch_per_task``, ``edits_vs_scratch``, the cost-weighted ratio).

:func:`decide` promotes when the candidate's mAP is not lower than the current model's by more
than the tolerance **and** the candidate would not cost annotators more edits: its
``edits_vs_scratch`` is not above the current model's by more than ``edits_tolerance``. A model
that ranks better but pre-annotates worse is refused (the F1-optimal thresholds of the calibrator
are not involved: they serve no decision here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistant.backbone import ImageFeatures
from assistant.calibration import Calibrator, FitConfig
from assistant.checkpoint import LoadedModel
from assistant.corrections import counts
from assistant.errors import DataError
from assistant.evaluate import evaluate, per_label_ap
from assistant.inference import Tagger
from assistant.labels import LabelSet
from preannotation import EditCosts, EffortTotals, show_mask

__all__ = [
    "Decision",
    "Evaluation",
    "cross_fitted_probabilities",
    "decide",
    "evaluable_labels",
    "evaluate_model",
    "heldout_effort",
    "heldout_metrics",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One model on the held-out split.

    Attributes:
        version: The model's version.
        metrics: ``mAP``, ``mAP_seen``, ``mAP_novel`` (absent when no such label is evaluable),
            ``F1@K``/``P@K``/``R@K`` in percent, and counts (``labels_evaluated``, ``images``).
        per_label_ap: AP (fraction) of every evaluable label.
        raw_scores: ``(N, C)`` cosine-mode scores over the vocabulary.
        probabilities: ``(N, C)`` cross-fitted calibrated probabilities.
    """

    version: str
    metrics: dict[str, float]
    per_label_ap: dict[str, float]
    raw_scores: NDArray[np.float64]
    probabilities: NDArray[np.float64]


@dataclass(frozen=True)
class Decision:
    """Promote or keep, and why.

    Attributes:
        promote: Whether the candidate should replace the current model.
        reason: One sentence for the logs and the report.
        delta: Candidate minus current held-out mAP, in points (NaN when not comparable).
        edits_delta: Candidate minus current held-out ``edits_vs_scratch`` under the
            pre-annotation rule (NaN when not measured).
    """

    promote: bool
    reason: str
    delta: float
    edits_delta: float = float("nan")


def evaluable_labels(targets: NDArray[Any]) -> NDArray[np.bool_]:
    """Columns with at least one positive and one negative answer (those with an AP)."""
    pos, neg = counts(targets)
    return np.asarray((pos > 0) & (neg > 0))


def cross_fitted_probabilities(
    raw: NDArray[Any],
    targets: NDArray[Any],
    labels: Sequence[str],
    *,
    fallback: Calibrator,
    config: FitConfig | None = None,
    folds: int = 2,
) -> NDArray[np.float64]:
    """Calibrated probabilities where each row is scored by a calibrator fitted on the other folds.

    Rows go to fold ``i % folds``. A fold whose complement is too small to fit uses ``fallback``.
    """
    raw = np.asarray(raw, dtype=np.float64)
    out = np.empty_like(raw)
    fold = np.arange(raw.shape[0]) % folds
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        try:
            calibrator = Calibrator.fit(raw[~test], targets[~test], labels, config)
        except DataError:
            calibrator = fallback
        out[test] = calibrator.apply(raw[test], labels)
    return out


def heldout_effort(
    probabilities: NDArray[Any], targets: NDArray[Any], costs: EditCosts | None = None, max_tags: int | None = None
) -> EffortTotals:
    """Edits against from scratch if the tags the rule picks from ``probabilities`` had been shown.

    Args:
        probabilities: ``(N, C)`` calibrated probabilities.
        targets: ``(N, C)`` answers: +1 present, -1 absent, 0 unknown (neither shown nor counted).
        costs: The edit costs (their break-even point decides what is shown).
        max_tags: At most this many tags shown per image.
    """
    t = np.asarray(targets)
    shown = show_mask(np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0), costs, max_tags=max_tags)
    # An unknown answer (a label added after the annotation) can be neither kept nor removed.
    return EffortTotals.from_arrays(shown & (t != 0), t > 0, costs)


def heldout_metrics(
    raw: NDArray[Any],
    probabilities: NDArray[Any],
    targets: NDArray[Any],
    labels: LabelSet,
    seen: frozenset[str] | set[str],
    ks: Sequence[int] = (3,),
    *,
    costs: EditCosts | None = None,
    max_tags: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """The round metrics (see the module docstring, step 3) and the AP of every evaluable label."""
    targets = np.asarray(targets)
    evaluable = evaluable_labels(targets)
    ap = per_label_ap(raw, targets)
    seen_mask = labels.mask(seen)
    metrics: dict[str, float] = {"images": float(targets.shape[0]), "labels_evaluated": float(evaluable.sum())}
    for key, mask in (("mAP", np.ones_like(evaluable)), ("mAP_seen", seen_mask), ("mAP_novel", ~seen_mask)):
        chosen = evaluable & mask
        if chosen.any():
            metrics[key] = 100.0 * float(ap[chosen].mean())
    metrics["labels_seen_evaluated"] = float((evaluable & seen_mask).sum())
    metrics["labels_novel_evaluated"] = float((evaluable & ~seen_mask).sum())
    usable_ks = [k for k in ks if 1 <= k <= len(labels)]
    if usable_ks:
        top = evaluate(probabilities, targets, usable_ks)
        metrics.update({k: v for k, v in top.items() if not k.startswith("mAP")})
    effort = heldout_effort(probabilities, targets, costs, max_tags)
    if effort.scratch:
        metrics["edits_per_task"] = float(effort.edits_per_task or 0.0)
        metrics["scratch_per_task"] = float(effort.scratch_per_task or 0.0)
        metrics["edits_vs_scratch"] = float(effort.cost_ratio(costs) or 0.0)
    per_label = {name: float(ap[j]) for j, name in enumerate(labels) if evaluable[j]}
    return metrics, per_label


def evaluate_model(
    loaded: LoadedModel,
    features: ImageFeatures,
    targets: NDArray[Any],
    labels: LabelSet,
    seen: frozenset[str] | set[str],
    *,
    fallback: Calibrator | None = None,
    ks: Sequence[int] = (3,),
    calibration: FitConfig | None = None,
    folds: int = 2,
    batch_size: int = 64,
    costs: EditCosts | None = None,
    max_tags: int | None = None,
) -> Evaluation:
    """Score held-out features with a model and compute the round metrics.

    Args:
        loaded: The model (its calibrator is the cross-fitting fallback unless ``fallback``).
        features: Its held-out image features.
        targets: The held-out targets over ``labels``.
        labels: The vocabulary.
        seen: The seen labels that split ``mAP_seen``/``mAP_novel`` (the current model's).
        fallback: Calibrator for folds too small to fit.
        ks: K values of the micro top-K metrics.
        calibration: Calibration fit settings.
        folds: Cross-fitting folds.
        batch_size: Images per scoring pass.
        costs: Edit costs of the pre-annotation rule (the effort metrics).
        max_tags: Tags shown per image at most (the effort metrics).
    """
    tagger = Tagger(loaded, device=loaded.model.device, batch_size=batch_size)
    raw = np.asarray(tagger.raw_scores(features, list(labels)), dtype=np.float64)
    probs = cross_fitted_probabilities(
        raw,
        np.asarray(targets),
        list(labels),
        fallback=fallback or loaded.calibrator,
        config=calibration,
        folds=folds,
    )
    metrics, per_label = heldout_metrics(raw, probs, targets, labels, seen, ks, costs=costs, max_tags=max_tags)
    return Evaluation(loaded.model.version, metrics, per_label, raw, probs)


def decide(current: Evaluation, candidate: Evaluation, tolerance: float, edits_tolerance: float = 0.0) -> Decision:
    """Promote a candidate that ranks about as well and would not cost annotators more edits.

    Args:
        current: The model in service on the held-out split.
        candidate: The candidate on the same split.
        tolerance: Held-out mAP points the candidate may lose.
        edits_tolerance: How much higher its ``edits_vs_scratch`` may be (share of the from-scratch work).
    """
    if "mAP" not in current.metrics or "mAP" not in candidate.metrics:
        return Decision(
            False,
            "no held-out label has both a positive and a negative answer, so the models cannot be compared",
            float("nan"),
        )
    new, old = candidate.metrics["mAP"], current.metrics["mAP"]
    delta = new - old
    ranking = f"held-out mAP {new:.2f} vs {old:.2f} ({delta:+.2f})"
    measured = "edits_vs_scratch" in current.metrics and "edits_vs_scratch" in candidate.metrics
    edits_delta = (
        candidate.metrics["edits_vs_scratch"] - current.metrics["edits_vs_scratch"] if measured else float("nan")
    )
    if delta < -tolerance:
        return Decision(False, f"{ranking}: lower by more than the tolerance of {tolerance:g}", delta, edits_delta)
    verdict = "better" if delta > 0 else "not worse beyond the tolerance"
    if not measured:
        return Decision(True, f"{ranking}: {verdict} (no held-out true tag to count edits on)", delta)
    effort = (
        f"pre-annotation edits {candidate.metrics['edits_per_task']:.2f} vs {current.metrics['edits_per_task']:.2f} "
        f"per task ({candidate.metrics['edits_vs_scratch']:.2f}x vs {current.metrics['edits_vs_scratch']:.2f}x "
        "from scratch)"
    )
    if edits_delta > edits_tolerance + 1e-12:
        return Decision(
            False,
            f"{ranking}, but {effort}: the candidate would cost annotators more edits "
            f"(more than the tolerance of {edits_tolerance:g}x)",
            delta,
            edits_delta,
        )
    return Decision(True, f"{ranking}: {verdict}; {effort}", delta, edits_delta)
