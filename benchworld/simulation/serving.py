"""Pre-annotation in the simulations, decided as the product decides, and its effort against from scratch.

:class:`ProjectServing` is one simulated project's serving state, built from the product's pure
rule (:mod:`preannotation`):

1. **The rule.** A prediction shows the tags whose probability reaches the break-even point of the
   edit costs (:func:`preannotation.show_mask`), at most ``max_tags`` per task, minus the tags the
   guard stopped.
2. **The project's calibration.** Every annotation answers, for each scored option, "was it
   true?". Every ``refit_every`` annotations the project's recalibration of the model version in
   service is refit on the (model probability, answer) pairs of that version
   (:func:`preannotation.fit_recalibration`, shrunk toward the model's own calibration while
   answers are few). Until the first refit, and again after a promotion, the model's own
   calibrator decides.
3. **The guard.** Each tag's showings under the version in service are counted kept or removed;
   a tag whose keep rate is confidently below the break-even point stops being shown
   (:func:`preannotation.judge_tag`). It resumes when a newer model version serves, or when a
   refit predicts its showings better than the probabilities that tripped it
   (:func:`preannotation.guard.predicts_better`); its counts then start again.

Whether tasks already pre-annotated are shown again with a refit map is not decided here: the
simulated agent re-predicts after a refit as its policy says (:mod:`assistant.agent_policy`), the
fixed schedule never does, and the round simulation serves each task when it is annotated.

:class:`EffortLog` counts what the annotator had to do, against the **truth**: one remove per
wrong tag shown (also the ones an anchored annotator kept: they are label errors, counted
separately) and one add per true tag not shown, against one add per true tag from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistant.corrections import AnnotatedImage
from assistant.errors import ConfigError
from benchworld.simulation.annotator import SimulatedAnnotator
from preannotation import (
    REFIT_EVERY,
    EditCosts,
    EffortTotals,
    GuardConfig,
    Recalibration,
    RecalibrationConfig,
    TaskEdits,
    fit_recalibration,
    judge_tag,
    show_mask,
)
from preannotation.guard import predicts_better

__all__ = ["EffortLog", "GuardEvent", "ProjectServing", "Served", "ServingConfig"]

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


@dataclass(frozen=True)
class ServingConfig:
    """How a simulated project pre-annotates (the product's rule and its settings).

    Attributes:
        costs: Edit costs; equal costs show tags from p = 0.5.
        max_tags: At most this many tags shown per task (the backend's default cap is 50).
        refit_every: Annotations between two refits of the project's calibration; 0: never
            (default: :data:`preannotation.REFIT_EVERY`, the live default too).
        recalibration: Shrinkage and minimum counts of the refit.
        guard: When a tag stops being shown; None: no guard.
    """

    costs: EditCosts = EditCosts()
    max_tags: int | None = 50
    refit_every: int = REFIT_EVERY
    recalibration: RecalibrationConfig = RecalibrationConfig()
    guard: GuardConfig | None = GuardConfig()

    def __post_init__(self) -> None:
        if self.refit_every < 0 or (self.max_tags is not None and self.max_tags < 0):
            raise ConfigError(
                f"invalid serving settings: refit_every={self.refit_every}, max_tags={self.max_tags}",
                fix="use refit_every >= 0 (0: never refit) and max_tags >= 0 (or None for no cap)",
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        r, g = self.recalibration, self.guard
        return {
            "costs": self.costs.to_dict(),
            "break_even": self.costs.break_even,
            "max_tags": self.max_tags,
            "refit_every": self.refit_every,
            "recalibration": {
                "prior_answers": r.prior_answers,
                "tag_prior_answers": r.tag_prior_answers,
                "min_tag_answers": r.min_tag_answers,
            },
            "guard": None if g is None else {"min_shown": g.min_shown, "confidence": g.confidence},
        }


@dataclass(frozen=True)
class Served:
    """One task's pre-annotation.

    Attributes:
        version: The model version that scored it.
        calibration: The project calibration it was served with (None: the model's own).
        labels: The options scored.
        model_probabilities: The model's calibrated probabilities, one per label.
        probabilities: After the project's recalibration (what the rule saw).
        shown: Which labels are shown.
    """

    version: str
    calibration: str | None
    labels: tuple[str, ...]
    model_probabilities: Floats
    probabilities: Floats
    shown: Bools

    @property
    def tags(self) -> tuple[str, ...]:
        """The shown tags."""
        return tuple(label for label, on in zip(self.labels, self.shown, strict=True) if on)


@dataclass(frozen=True)
class GuardEvent:
    """The guard stopped or resumed a tag.

    Attributes:
        annotations: The project's annotations when it happened.
        version: The model version in service.
        tag: The tag.
        tripped: True when it stopped showing the tag, False when it resumed it.
        reason: Why, for people.
    """

    annotations: int
    version: str
    tag: str
    tripped: bool
    reason: str


@dataclass
class _Showings:
    """One tag's showings under the version in service: served probabilities, model's, kept."""

    served: list[float] = field(default_factory=list)
    model: list[float] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        kept = sum(self.kept)
        return kept, len(self.kept) - kept


class ProjectServing:
    """One simulated project's pre-annotation state (module docstring).

    Args:
        config: The rule's settings.
    """

    def __init__(self, config: ServingConfig | None = None) -> None:
        self.config = config or ServingConfig()
        self.version: str | None = None
        self.recalibration = Recalibration()
        self.refits = 0
        self.annotations = 0
        self.events: list[GuardEvent] = []
        self.suppressed: dict[str, str] = {}
        self._tags: list[str] = []
        self._probabilities: list[float] = []
        self._answers: list[bool] = []
        self._showings: dict[str, _Showings] = {}
        self._since_refit = 0

    @property
    def calibration(self) -> str | None:
        """An id of the project calibration in service, which changes at every refit (None: the model's own)."""
        return None if self.recalibration.is_identity else f"{self.version}/refit-{self.refits}"

    def use_version(self, version: str) -> None:
        """The model in service is ``version``: a new one starts from its own calibration and resumes every tag."""
        if version == self.version:
            return
        previous, self.version = self.version, version
        self.recalibration = Recalibration(model_version=version)
        self._tags, self._probabilities, self._answers = [], [], []
        self._showings.clear()
        self._since_refit = 0
        for tag in sorted(self.suppressed):
            self._event(tag, False, f"a newer model version serves the project ({previous} -> {version})")
        self.suppressed.clear()

    def serve(self, version: str, labels: Sequence[str], probabilities: Floats) -> Served:
        """The pre-annotation of one task scored by ``version`` (the version in service)."""
        self.use_version(version)
        p = self.recalibration.apply(probabilities, list(labels))
        suppressed = np.array([label in self.suppressed for label in labels], dtype=bool)
        shown = show_mask(p, self.config.costs, max_tags=self.config.max_tags, suppressed=suppressed)
        return Served(version, self.calibration, tuple(labels), np.asarray(probabilities, dtype=np.float64), p, shown)

    def record(self, served: Served | None, final: Iterable[str]) -> bool:
        """Learn from an annotation of a task served ``served`` (None: it had no prediction).

        Args:
            served: What the annotator was shown.
            final: The tags the annotation has (what the product sees, label errors included).

        Returns:
            True when this annotation triggered a refit of the project's calibration.
        """
        self.annotations += 1
        if served is None or served.version != self.version:
            return False  # the answers of another version's probabilities do not calibrate this one
        answers = set(final)
        for j, label in enumerate(served.labels):
            kept = label in answers
            self._tags.append(label)
            self._probabilities.append(float(served.model_probabilities[j]))
            self._answers.append(kept)
            if served.shown[j]:
                showings = self._showings.setdefault(label, _Showings())
                showings.served.append(float(served.probabilities[j]))
                showings.model.append(float(served.model_probabilities[j]))
                showings.kept.append(kept)
                self._judge(label, showings)
        self._since_refit += 1
        if self.config.refit_every and self._since_refit >= self.config.refit_every:
            self.refit()
            return True
        return False

    def refit(self) -> None:
        """Refit the project's calibration of the version in service, and resume the tags it predicts better."""
        self._since_refit = 0
        if not self._tags:
            return
        self.recalibration = fit_recalibration(
            self._tags,
            self._probabilities,
            self._answers,
            config=self.config.recalibration,
            model_version=self.version,
        )
        self.refits += 1
        for tag in sorted(self.suppressed):
            s = self._showings.get(tag, _Showings())
            refit = self.recalibration.apply(np.asarray(s.model), [tag] * len(s.model))
            if predicts_better(s.served, refit, s.kept):
                kept, removed = s.counts()
                mean = float(np.mean(refit)) if len(refit) else float("nan")
                self._event(
                    tag,
                    False,
                    f"the refit calibration predicts its {kept + removed} showings better "
                    f"(mean probability {np.mean(s.served):.2f} -> {mean:.2f}, kept {kept})",
                )
                del self.suppressed[tag]
                self._showings.pop(tag, None)  # its counts start again

    def _judge(self, tag: str, showings: _Showings) -> None:
        if self.config.guard is None or tag in self.suppressed:
            return
        verdict = judge_tag(*showings.counts(), self.config.costs, self.config.guard)
        if verdict.tripped:
            self.suppressed[tag] = verdict.reason
            self._event(tag, True, verdict.reason)

    def _event(self, tag: str, tripped: bool, reason: str) -> None:
        self.events.append(GuardEvent(self.annotations, self.version or "", tag, tripped, reason))


@dataclass
class EffortLog:
    """Edits against labeling from scratch, per annotation, counted against the truth (module docstring).

    Attributes:
        costs: The edit costs (the ratio weighs removes by them).
        tasks: One :class:`~preannotation.TaskEdits` per annotation (shown vs true tags), in order.
        errors: Wrong shown tags the annotator kept, per annotation.
    """

    costs: EditCosts = EditCosts()
    tasks: list[TaskEdits] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    def add(self, shown: Iterable[str], truth: Iterable[str], errors: int = 0) -> TaskEdits:
        """Count one annotation: the tags shown, the true tags, the label errors the annotator kept."""
        edits = TaskEdits.compare(shown, truth)
        self.tasks.append(edits)
        self.errors.append(errors)
        return edits

    def annotate(
        self, annotator: SimulatedAnnotator, index: int, options: Sequence[str], shown: Sequence[str]
    ) -> AnnotatedImage:
        """Have ``annotator`` label pool image ``index`` shown ``shown``, and count it.

        The truth from scratch is the annotation's tags minus the wrong shown tags it kept (with a
        miss rate, the true tags it missed are missed from scratch too).
        """
        before = annotator.introduced_errors
        annotation = annotator.annotate(index, options, shown)
        kept_wrong = {t for t in shown if t in annotation.positives and not annotator.is_true(index, t)}
        self.add(shown, annotation.positives - kept_wrong, annotator.introduced_errors - before)
        return annotation

    def totals(self, start: int = 0, stop: int | None = None) -> EffortTotals:
        """The totals of annotations ``start .. stop - 1``."""
        return EffortTotals.of(self.tasks[start:stop], self.costs)

    def last_quarter(self) -> EffortTotals:
        """The totals of the last quarter of the annotations."""
        return self.totals(3 * len(self.tasks) // 4)

    def cumulative_ratio(self, upto: int) -> float | None:
        """Edits against from scratch over the first ``upto`` annotations (cost-weighted)."""
        return self.totals(0, upto).cost_ratio(self.costs)

    def summary(self) -> dict[str, Any]:
        """Totals, the last quarter and the label errors, JSON-ready."""
        whole, last = self.totals(), self.last_quarter()
        return {
            **whole.summary(),
            "cost_ratio": _round(whole.cost_ratio(self.costs)),
            "last_quarter": {**last.summary(), "cost_ratio": _round(last.cost_ratio(self.costs))},
            "shown_per_task": _round((whole.kept + whole.removed) / whole.tasks if whole.tasks else None),
            "errors_introduced": sum(self.errors),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
