"""Map raw model scores to probabilities, and hold the decision thresholds for pre-annotation.

The model's raw scores (a vocabulary-independent fused cosine score per image and label, roughly
in [-1, 1]) are ranking scores, not probabilities (docs/method.md §2.3, §9.1): a fixed cut-off
means something different for every label. A :class:`Calibrator` turns them into probabilities
with a logistic map ``p = sigmoid(slope · s + intercept)`` and keeps a decision threshold on p.

How :meth:`Calibrator.fit` works, on annotated validation data (targets +1 / -1, 0 ignored):

1. **Global map**: one Platt fit on every known (image, label) entry pooled.
2. **Per-label map**: a label with at least ``min_positives`` positives and ``min_negatives``
   negatives gets its own Platt fit, shrunk toward the global map by an L2 prior (so a label
   with little data stays close to the global map); other labels use the global map.
3. **Thresholds**: a label with enough data gets the threshold that maximises F1 on its own
   validation entries; the global threshold maximises F1 over all entries pooled under the
   global map. Labels without enough data, and labels unknown to the calibrator (novel tags),
   use the global map **and** the global threshold, a consistent pair.

Before any annotation, a model uses a *prior*: :meth:`Calibrator.default` (a guess for CLIP ViT-B
cosines) or, for a backbone that ships one, a global-only :meth:`Calibrator.fit_prior` fitted on
its zero-shot scores (step 1 and the global threshold of step 3, no per-label entries).
:attr:`Calibrator.is_prior` tells the two apart from a calibrator fitted on the model's own data.

Platt fits use Platt's smoothed targets (``(N₊+1)/(N₊+2)`` and ``1/(N₋+2)``), which keep a
perfectly separable label finite, and damped Newton steps on the standardised score. The slope
is constrained to be >= 0, so every map is monotone: a higher raw score never gives a lower
probability (up to the last bits of float64: numpy's vectorised ``exp`` is accurate to a few ULPs
but not monotone at that level, so two nearly equal scores can differ by ~1e-16 the wrong way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assistant.errors import ConfigError, DataError
from assistant.evaluate import check_label_names, validate_inputs
from preannotation.logistic import fit_monotone, sigmoid

__all__ = ["PRIOR_METHODS", "Calibrator", "FitConfig", "LabelCalibration"]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
_FORMAT = "assistant.calibrator/1"
# Methods of calibrators that no annotation of the model's own labels has fitted: the uninformed
# default (CLIP ViT-B cosines) and a backbone prior (fitted once on the backbone's zero-shot
# scores, e.g. the benchmark world's validation split, and shipped with its weights).
PRIOR_METHODS = frozenset({"default", "prior"})


@dataclass(frozen=True)
class FitConfig:
    """Settings of :meth:`Calibrator.fit`."""

    # A label gets its own map and threshold only with this many +1 and -1 entries: below ~5 of
    # either, a 2-parameter fit and an F1-optimal cut mostly fit noise.
    min_positives: int = 5
    min_negatives: int = 5
    # L2 pull of a label's (slope, intercept), in standardised-score units, toward the global fit.
    # The data curvature is about 0.1-0.25 per entry, so 1.0 weighs like ~5-10 entries.
    label_prior: float = 1.0
    # L2 pull of the pooled fit toward 0: only keeps separable data finite.
    global_prior: float = 1e-3
    # Newton steps; the problem is 2-D and convex, so 50 is far more than needed (~10 typical).
    max_iter: int = 50

    def __post_init__(self) -> None:
        # Both priors must be > 0: they keep every Newton system solvable, even for a label whose
        # scores are all equal.
        if (
            min(self.min_positives, self.min_negatives, self.max_iter) < 1
            or min(self.label_prior, self.global_prior) <= 0
        ):
            raise ConfigError(
                f"Invalid calibration fit settings: {self}",
                fix="use minimum counts and max_iter >= 1 and priors > 0, e.g. FitConfig()",
            )


@dataclass(frozen=True)
class LabelCalibration:
    """The map and threshold of one label, and whether they were fitted on its own data.

    Attributes:
        slope: ``a`` in ``sigmoid(a·s + b)`` (>= 0).
        intercept: ``b``.
        threshold: Decision threshold on the probability.
        fitted: True when map and threshold come from this label's data, False when they are
            the global ones (too few positives or negatives).
        n_positive: +1 entries seen at fit time.
        n_negative: -1 entries seen at fit time.
    """

    slope: float
    intercept: float
    threshold: float
    fitted: bool
    n_positive: int
    n_negative: int


def _platt(z: FloatArray, y: NDArray[np.bool_], prior_mean: FloatArray, prior: float, max_iter: int) -> FloatArray:
    """Platt fit in standardised-score space with the slope constrained to >= 0."""
    n_pos = float(y.sum())
    n_neg = float(y.size - y.sum())
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    return fit_monotone(z, t, prior_mean, prior, max_iter)


def _best_f1_threshold(p: FloatArray, y: NDArray[np.bool_]) -> tuple[float, float]:
    """The threshold on p (decide ``p >= threshold``) with the highest F1, and that F1.

    Only cuts between distinct values are candidates, so tied probabilities get one decision.
    Among equal F1, the highest threshold (fewest predicted positives) wins. The threshold sits
    halfway to the next lower value, so scores near a validation point keep its decision.
    """
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    predicted = np.arange(1, ps.size + 1)
    f1 = 2.0 * tp / (predicted + ys.sum())  # 2TP / (2TP + FP + FN) with FP + TP = predicted
    end_of_run = np.append(ps[:-1] > ps[1:], True)
    f1 = np.where(end_of_run, f1, -1.0)
    i = int(np.argmax(f1))
    threshold = float(ps[i])
    if i + 1 < ps.size:
        mid = 0.5 * (ps[i] + ps[i + 1])
        if ps[i + 1] < mid <= ps[i]:
            threshold = float(mid)
    return threshold, float(f1[i])


@dataclass(frozen=True)
class Calibrator:
    """Raw score → probability maps and decision thresholds, per label with a global fallback.

    Build one with :meth:`fit` (annotated validation data), :meth:`default` (no data yet) or
    :meth:`fit_prior` (a global-only prior for a backbone, fitted on its zero-shot scores).

    Attributes:
        slope: Global ``a`` in ``sigmoid(a·s + b)`` (>= 0).
        intercept: Global ``b``.
        threshold: Global decision threshold on the probability.
        labels: Per-label entries; labels absent here use the global map and threshold.
        method: ``"platt"`` (fitted on annotations), ``"default"`` (the no-data prior) or
            ``"prior"`` (a backbone prior, :meth:`fit_prior`).

    Example:
        >>> cal = Calibrator.default()
        >>> probs = cal.apply([[0.31, 0.18]], ["cat", "dog"])
        >>> keep = probs >= cal.thresholds(["cat", "dog"])
    """

    slope: float
    intercept: float
    threshold: float
    labels: Mapping[str, LabelCalibration] = field(default_factory=dict, hash=False)
    method: str = "platt"

    def __post_init__(self) -> None:
        entries: dict[str, tuple[float, float, float]] = {"<global>": (self.slope, self.intercept, self.threshold)}
        entries.update((k, (v.slope, v.intercept, v.threshold)) for k, v in self.labels.items())
        for name, (a, b, thr) in entries.items():
            if not (math.isfinite(a) and math.isfinite(b) and a >= 0.0 and 0.0 <= thr <= 1.0):
                raise DataError(
                    f"Invalid calibration for {name!r}: slope {a}, intercept {b}, threshold {thr}",
                    why="the slope must be finite and >= 0 (monotone map) and the threshold in [0, 1]",
                    fix="refit the calibrator, or repair the saved JSON",
                )

    @classmethod
    def default(cls, temperature: float = 0.01, bias: float = 0.25) -> Calibrator:
        """The prior used before any annotation exists: ``sigmoid((s - bias) / temperature)``.

        The threshold is 0.5, i.e. a raw score of ``bias``. The defaults assume cosine scores of
        a CLIP ViT-B model: 0.01 is CLIP's own logit temperature (logit scale 100), and matching
        image/text pairs typically score ~0.3 against ~0.2 for non-matching ones, so 0.25 sits
        between them. They are an uninformed guess for other backbones: fit on annotated data
        as soon as some exists.

        Args:
            temperature: Raw-score units per logit unit (> 0).
            bias: Raw score mapped to probability 0.5.

        Returns:
            A calibrator with only a global map.

        Raises:
            DataError: ``temperature`` is not a positive finite number or ``bias`` is not finite.
        """
        if not (math.isfinite(temperature) and temperature > 0.0 and math.isfinite(bias)):
            raise DataError(
                f"Invalid default calibration: temperature {temperature}, bias {bias}",
                fix="pass a positive temperature (e.g. 0.01) and a finite bias (e.g. 0.25)",
            )
        return cls(slope=1.0 / temperature, intercept=-bias / temperature, threshold=0.5, method="default")

    @property
    def is_prior(self) -> bool:
        """True while no annotation of the model's own labels has calibrated it.

        That is :meth:`default` and a backbone prior (:meth:`fit_prior`): their thresholds are
        one global guess for every label, so closeness to a threshold says little about a label.
        """
        return self.method in PRIOR_METHODS

    @classmethod
    def fit_prior(
        cls, scores: ArrayLike, targets: ArrayLike, labels: Sequence[str], config: FitConfig | None = None
    ) -> Calibrator:
        """A global-only prior for a backbone: one pooled map and one F1-optimal threshold.

        It is :meth:`fit` keeping only the pooled (global) part: the labels a model will serve
        are unknown when its backbone is calibrated, so no per-label entry is kept and every
        label gets the global map and threshold. Use it instead of :meth:`default` for a backbone
        whose raw scores are not distributed like CLIP ViT-B cosines.

        Args:
            scores: Images × labels raw scores (computed exactly as the tagger computes them).
            targets: Same shape, +1 present, -1 absent, 0 unknown (ignored).
            labels: One unique name per column.
            config: Minimum counts and priors; :class:`FitConfig` defaults when None.

        Returns:
            The prior (``method="prior"``, no per-label entries).

        Raises:
            DataError: Bad arrays or names, or fewer pooled positives/negatives than the minimum.
        """
        fitted = cls.fit(scores, targets, labels, config)
        return cls(fitted.slope, fitted.intercept, fitted.threshold, {}, "prior")

    @classmethod
    def fit(
        cls, scores: ArrayLike, targets: ArrayLike, labels: Sequence[str], config: FitConfig | None = None
    ) -> Calibrator:
        """Fit maps and thresholds on annotated validation data (see the module docstring).

        Args:
            scores: Images × labels raw scores.
            targets: Same shape, +1 present, -1 absent, 0 unknown (ignored).
            labels: One unique name per column.
            config: Minimum counts and priors; :class:`FitConfig` defaults when None.

        Returns:
            The fitted calibrator (``method="platt"``).

        Raises:
            DataError: Bad arrays or names, or fewer pooled positives/negatives than the minimum.
        """
        cfg = config or FitConfig()
        s, t = validate_inputs(scores, targets)
        names = check_label_names(labels, s.shape[1])
        known = t != 0
        if not np.isfinite(s[known]).all():
            raise DataError("Some annotated scores are infinite", fix="calibrate finite raw scores")
        n_pos, n_neg = int((t == 1).sum()), int((t == -1).sum())
        if n_pos < cfg.min_positives or n_neg < cfg.min_negatives:
            raise DataError(
                f"Too little annotated data to calibrate: {n_pos} positives and {n_neg} negatives in all",
                why=f"a fit needs at least {cfg.min_positives} of each",
                fix="annotate more images, or use Calibrator.default() until then",
            )
        # Fit in standardised units so the priors mean the same for any score scale (raw cosines
        # differ by ~0.1 between matches and non-matches, i.e. slopes near 50-100).
        mu, sd = float(s[known].mean()), float(s[known].std())
        sd = sd if sd > 1e-12 else 1.0

        def to_raw(theta: FloatArray) -> tuple[float, float]:
            return float(theta[0] / sd), float(theta[1] - theta[0] * mu / sd)

        zero = np.zeros(2)
        g_theta = _platt((s[known] - mu) / sd, t[known] == 1, zero, cfg.global_prior, cfg.max_iter)
        g_slope, g_intercept = to_raw(g_theta)
        g_thr, g_f1 = _best_f1_threshold(sigmoid(g_slope * s[known] + g_intercept), t[known] == 1)
        per_label: dict[str, LabelCalibration] = {}
        for c, name in enumerate(names):
            col_known = t[:, c] != 0
            y = t[col_known, c] == 1
            cp, cn = int(y.sum()), int(y.size - y.sum())
            if cp >= cfg.min_positives and cn >= cfg.min_negatives:
                theta = _platt((s[col_known, c] - mu) / sd, y, g_theta, cfg.label_prior, cfg.max_iter)
                a, b = to_raw(theta)
                thr, _ = _best_f1_threshold(sigmoid(a * s[col_known, c] + b), y)
                per_label[name] = LabelCalibration(a, b, thr, True, cp, cn)
            else:
                per_label[name] = LabelCalibration(g_slope, g_intercept, g_thr, False, cp, cn)
        n_fitted = sum(v.fitted for v in per_label.values())
        logger.info("calibrated %d of %d labels on their own data; pooled F1 %.3f", n_fitted, len(names), g_f1)
        return cls(g_slope, g_intercept, g_thr, per_label, "platt")

    def _params(self, labels: Sequence[str]) -> tuple[FloatArray, FloatArray, FloatArray]:
        glob = LabelCalibration(self.slope, self.intercept, self.threshold, False, 0, 0)
        rows = [self.labels.get(name, glob) for name in labels]
        return (
            np.array([r.slope for r in rows], dtype=np.float64),
            np.array([r.intercept for r in rows], dtype=np.float64),
            np.array([r.threshold for r in rows], dtype=np.float64),
        )

    def apply(self, scores: ArrayLike, labels: Sequence[str]) -> FloatArray:
        """Probabilities for raw scores; unknown (novel) labels use the global map.

        Args:
            scores: ``(n_labels,)`` or ``(n_images, n_labels)`` raw scores.
            labels: One name per score column, any vocabulary.

        Returns:
            Probabilities in [0, 1], same shape as ``scores``.

        Raises:
            DataError: The last axis does not match ``labels``, or a score is NaN.
        """
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim not in (1, 2) or s.shape[-1] != len(labels):
            raise DataError(
                f"Scores of shape {s.shape} do not match {len(labels)} labels",
                fix="pass one score column per label name, as (n_labels,) or (n_images, n_labels)",
            )
        if not np.isfinite(s).all():
            raise DataError("Some scores are NaN or infinite", fix="check the model output")
        slope, intercept, _ = self._params(labels)
        return sigmoid(s * slope + intercept)

    def thresholds(self, labels: Sequence[str]) -> FloatArray:
        """Decision thresholds on the probability; unknown labels get the global one.

        Args:
            labels: Label names.

        Returns:
            One threshold per label, in [0, 1].
        """
        return self._params(labels)[2]

    def predict(self, scores: ArrayLike, labels: Sequence[str]) -> NDArray[np.bool_]:
        """Present/absent decisions: ``apply(scores, labels) >= thresholds(labels)``.

        Args:
            scores: ``(n_labels,)`` or ``(n_images, n_labels)`` raw scores.
            labels: One name per score column.

        Returns:
            Booleans of the same shape as ``scores``.
        """
        return self.apply(scores, labels) >= self.thresholds(labels)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (round-trips through :meth:`from_dict`)."""
        return {
            "format": _FORMAT,
            "method": self.method,
            "global": {"slope": self.slope, "intercept": self.intercept, "threshold": self.threshold},
            "labels": {
                name: {
                    "slope": v.slope,
                    "intercept": v.intercept,
                    "threshold": v.threshold,
                    "fitted": v.fitted,
                    "n_positive": v.n_positive,
                    "n_negative": v.n_negative,
                }
                for name, v in self.labels.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_dict` output.

        Args:
            data: The mapping, e.g. read from JSON.

        Returns:
            The calibrator.

        Raises:
            DataError: Wrong format tag, missing or mistyped fields, or invalid values.
        """
        if data.get("format") != _FORMAT:
            raise DataError(
                f"Not a calibrator description: format {data.get('format')!r}",
                fix=f"pass the output of Calibrator.to_dict() (format {_FORMAT!r})",
            )
        try:
            g = data["global"]
            labels = {
                str(name): LabelCalibration(
                    float(v["slope"]),
                    float(v["intercept"]),
                    float(v["threshold"]),
                    bool(v["fitted"]),
                    int(v["n_positive"]),
                    int(v["n_negative"]),
                )
                for name, v in data["labels"].items()
            }
            return cls(float(g["slope"]), float(g["intercept"]), float(g["threshold"]), labels, str(data["method"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError("The calibrator description is incomplete or mistyped", why=f"field error: {e!r}") from e
