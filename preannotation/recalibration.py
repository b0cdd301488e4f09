"""A project's own calibration: the model's probabilities remapped from the project's annotations.

The model's probabilities come from its calibrator, fitted on other data (the bundled model's
validation images, or a round's held-out split). A project's images, tags and annotators differ,
so the probabilities can be off in a way only the project's answers show, and the decision rule
(:mod:`preannotation.rule`) is only as good as they are. Every annotation of a pre-annotated task
answers, for each tag the prediction scored, "was it true?". A recalibration is a Platt map on the
logit of the served probability, fitted on those (probability, answer) pairs::

    p' = sigmoid(a · logit(p) + b)        identity: a = 1, b = 0

**Shrinkage.** While answers are few, the map stays near the identity (the model's own
calibration, the prior): the fit adds pseudo-answers at the observed probabilities whose targets
are the prior's own probabilities, weighing :attr:`RecalibrationConfig.prior_answers` answers in
all. With 10 answers and a prior worth 30, the map moves a quarter of the way to the data; with
300, it follows the data (~90%).

**Per tag and pooled.** The pooled map is fitted on every answer. A tag with at least
:attr:`RecalibrationConfig.min_tag_answers` answers (and a few of each outcome) gets its own map,
shrunk the same way toward the pooled one; other tags, novel tags among them, use the pooled map
until they have answers of their own.

A recalibration belongs to one model version: the probabilities it maps are that version's. A
newly promoted model starts again from the identity (its own calibrator, fitted in its round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from preannotation.costs import PreannotationError
from preannotation.logistic import fit_monotone, logit, sigmoid
from preannotation.rule import probabilities_of

__all__ = ["REFIT_EVERY", "LogitMap", "Recalibration", "RecalibrationConfig", "fit_recalibration"]

Floats = NDArray[np.float64]
#: Annotations between two refits of a project's calibration, live (``ASSISTANT_RECALIBRATION_EVERY``)
#: and in the simulations (``ServingConfig.refit_every``). Selected on the agent simulation's tuning
#: seeds: every 10 or 25 annotations changed the last quarter's edits by less than the spread between
#: seeds, and 25 needs fewer refits for the same figure (docs/preannotation.md).
REFIT_EVERY: Final = 25
_FORMAT = "preannotation.recalibration/1"
# A whisper of L2 toward the prior mean: keeps the Newton system solvable when every answer has
# the same probability (the slope is then not identified and stays at the prior's).
_TINY_PRIOR = 1e-3


@dataclass(frozen=True)
class RecalibrationConfig:
    """Settings of :func:`fit_recalibration`.

    Attributes:
        prior_answers: How many answers the model's own calibration weighs in the pooled map.
        tag_prior_answers: How many answers the pooled map weighs in a tag's own map.
        min_tag_answers: Answers a tag needs for a map of its own.
        min_tag_each: ... with at least this many "true" and this many "false" answers among them.
        max_iter: Newton steps per fit.
    """

    # 30 answers: about 5 annotated tasks of 6 scored tags each move the map a sixth of the way.
    prior_answers: float = 30.0
    tag_prior_answers: float = 20.0
    min_tag_answers: int = 20
    # 0: a tag that annotators always remove gets its own map too (the pseudo-answers keep a
    # one-sided fit finite), which is exactly the tag whose probabilities most need it.
    min_tag_each: int = 0
    max_iter: int = 50

    def __post_init__(self) -> None:
        weights_ok = min(self.prior_answers, self.tag_prior_answers) > 0
        if not weights_ok or min(self.min_tag_answers, self.max_iter) < 1 or self.min_tag_each < 0:
            raise PreannotationError(
                f"invalid recalibration settings {self}",
                fix="use prior weights > 0 and counts >= 1, e.g. RecalibrationConfig()",
            )


@dataclass(frozen=True)
class LogitMap:
    """``p' = sigmoid(slope · logit(p) + intercept)``, and the answers it was fitted on.

    Attributes:
        slope: >= 0, so the map keeps the model's order of tags.
        intercept: Shift in logits (negative: the model was overconfident).
        answers: Answers behind it (0 for the identity).
    """

    slope: float = 1.0
    intercept: float = 0.0
    answers: int = 0

    def apply(self, probabilities: ArrayLike) -> Floats:
        """The remapped probabilities (the identity returns them unchanged)."""
        p = probabilities_of(probabilities)
        if self.slope == 1.0 and self.intercept == 0.0:
            return p
        return sigmoid(self.slope * logit(p) + self.intercept)

    def to_dict(self) -> dict[str, float | int]:
        """``{"slope", "intercept", "answers"}``."""
        return {"slope": self.slope, "intercept": self.intercept, "answers": self.answers}


@dataclass(frozen=True)
class Recalibration:
    """A project's maps of one model version's probabilities: pooled, and per tag where fitted.

    Attributes:
        pooled: The map of every tag without its own.
        tags: Tags with a map of their own.
        model_version: The model version whose probabilities these maps take (None: any).
        answers: Answers behind the fit.
    """

    pooled: LogitMap = LogitMap()
    tags: Mapping[str, LogitMap] = field(default_factory=dict, hash=False)
    model_version: str | None = None
    answers: int = 0

    @property
    def is_identity(self) -> bool:
        """True when nothing was fitted (the model's probabilities are served as they are)."""
        return self.answers == 0

    def map_of(self, tag: str) -> LogitMap:
        """The tag's own map, else the pooled one."""
        return self.tags.get(tag, self.pooled)

    def apply(self, probabilities: ArrayLike, tags: Sequence[str]) -> Floats:
        """Remap ``(n_tags,)`` or ``(n_images, n_tags)`` probabilities, one column per tag.

        Raises:
            PreannotationError: The last axis does not match ``tags``, or a value is not a probability.
        """
        p = probabilities_of(probabilities)
        if p.ndim not in (1, 2) or p.shape[-1] != len(tags):
            raise PreannotationError(
                f"probabilities of shape {p.shape} do not match {len(tags)} tags",
                fix="pass one column per tag name",
            )
        out = self.pooled.apply(p)
        for j, tag in enumerate(tags):
            own = self.tags.get(tag)
            if own is not None:
                out[..., j] = own.apply(p[..., j])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (round-trips through :meth:`from_dict`)."""
        return {
            "format": _FORMAT,
            "model_version": self.model_version,
            "answers": self.answers,
            "pooled": self.pooled.to_dict(),
            "tags": {tag: m.to_dict() for tag, m in self.tags.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recalibration:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            PreannotationError: Wrong format tag, or missing or mistyped fields.
        """
        if data.get("format") != _FORMAT:
            raise PreannotationError(
                f"not a recalibration record: format {data.get('format')!r}",
                fix=f"pass the output of Recalibration.to_dict() (format {_FORMAT!r})",
            )
        try:

            def one(m: Mapping[str, Any]) -> LogitMap:
                slope, intercept = float(m["slope"]), float(m["intercept"])
                if not (np.isfinite(slope) and np.isfinite(intercept) and slope >= 0):
                    raise ValueError(f"slope {slope}, intercept {intercept}")
                return LogitMap(slope, intercept, int(m["answers"]))

            version = data.get("model_version")
            return cls(
                pooled=one(data["pooled"]),
                tags={str(tag): one(m) for tag, m in data["tags"].items()},
                model_version=None if version is None else str(version),
                answers=int(data["answers"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PreannotationError(
                "the recalibration record is incomplete or invalid",
                why=f"field error: {exc!r}",
                fix="refit it from the project's annotations",
            ) from exc


def _shrunk_fit(p: Floats, y: NDArray[np.bool_], prior: LogitMap, prior_answers: float, max_iter: int) -> LogitMap:
    """A map fitted on (p, y) plus pseudo-answers worth ``prior_answers`` that follow ``prior``."""
    z = logit(p)
    n = len(p)
    # Pseudo-answers at the observed probabilities, with the prior's probability as a soft target.
    zz = np.concatenate([z, z])
    targets = np.concatenate([y.astype(np.float64), prior.apply(p)])
    weights = np.concatenate([np.ones(n), np.full(n, prior_answers / n)])
    mean = np.array([prior.slope, prior.intercept])
    slope, intercept = fit_monotone(zz, targets, mean, _TINY_PRIOR, max_iter, weights)
    return LogitMap(float(slope), float(intercept), n)


def fit_recalibration(
    tags: Sequence[str],
    probabilities: ArrayLike,
    answers: ArrayLike,
    *,
    config: RecalibrationConfig | None = None,
    model_version: str | None = None,
) -> Recalibration:
    """Fit a project's maps on (tag, served probability, answer) triples.

    Args:
        tags: The tag of each pair.
        probabilities: The probability the model served for it.
        answers: Whether the annotator's final annotation has it.
        config: Shrinkage and minimum counts.
        model_version: The version whose probabilities were served (recorded, not checked).

    Returns:
        The recalibration; the identity when there are no pairs.

    Raises:
        PreannotationError: The three sequences differ in length, or a probability is invalid.
    """
    cfg = config or RecalibrationConfig()
    p = probabilities_of(probabilities).ravel()
    y = np.asarray(answers, dtype=bool).ravel()
    names = np.asarray(list(tags), dtype=object)
    if not len(names) == len(p) == len(y):
        raise PreannotationError(
            f"{len(names)} tags, {len(p)} probabilities and {len(y)} answers",
            fix="pass one tag, one probability and one answer per pair",
        )
    if len(p) == 0:
        return Recalibration(model_version=model_version)
    pooled = _shrunk_fit(p, y, LogitMap(), cfg.prior_answers, cfg.max_iter)
    own: dict[str, LogitMap] = {}
    for tag in sorted(set(names.tolist())):
        rows = names == tag
        n, positives = int(rows.sum()), int(y[rows].sum())
        if n >= cfg.min_tag_answers and min(positives, n - positives) >= cfg.min_tag_each:
            own[str(tag)] = _shrunk_fit(p[rows], y[rows], pooled, cfg.tag_prior_answers, cfg.max_iter)
    return Recalibration(pooled=pooled, tags=own, model_version=model_version, answers=len(p))
