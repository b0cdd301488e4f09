"""The per-tag guard: stop showing a tag that annotators remove more often than it pays.

The decision rule shows a tag when its probability reaches the break-even point ``b``
(:mod:`preannotation.costs`). If the probabilities are right, a shown tag is kept at least a
share ``b`` of the time. The effort ledger counts what really happened to each tag's showings:
kept or removed. When the keep rate is **confidently** below ``b``, showing the tag costs more
than it saves, whatever the model believes, and the guard stops showing it in that project.

"Confidently": the upper end of a Wilson score interval (95% by default) of the keep rate lies
below ``b``, after at least :attr:`GuardConfig.min_shown` showings. With 20 showings, a tag kept 5
times (25%; interval 11-47%) trips at equal costs, one kept 7 times (35%; 18-57%) does not yet.

A tripped tag resumes when a newer model version serves the project, or when a refit
calibration predicts the tag better than the probabilities that tripped it
(:func:`predicts_better`); its counts then start again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from preannotation.costs import EditCosts, PreannotationError
from preannotation.rule import probabilities_of

__all__ = ["GuardConfig", "GuardVerdict", "brier_scores", "judge_tag", "keep_rate_interval", "predicts_better"]


@dataclass(frozen=True)
class GuardConfig:
    """When the guard may trip.

    Attributes:
        min_shown: Showings (kept + removed) before a tag can trip: below ~20, even a tag kept
            a quarter of the time has an interval reaching past 0.5.
        confidence: Two-sided level of the keep-rate interval.
    """

    min_shown: int = 20
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.min_shown < 1 or not 0.5 <= self.confidence < 1.0:
            raise PreannotationError(
                f"invalid guard settings {self}", fix="use min_shown >= 1 and a confidence in [0.5, 1)"
            )


def keep_rate_interval(kept: int, removed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the keep rate ``kept / (kept + removed)``.

    Returns:
        ``(low, high)``; ``(0.0, 1.0)`` without showings.
    """
    n = kept + removed
    if kept < 0 or removed < 0:
        raise PreannotationError(f"negative counts kept={kept} removed={removed}", fix="pass counts >= 0")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    rate = kept / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's judgement of one tag.

    Attributes:
        tripped: Stop showing the tag.
        kept: Showings kept.
        removed: Showings removed.
        low: Lower end of the keep-rate interval.
        high: Upper end.
        break_even: The keep rate a shown tag needs to pay.
        reason: For people: the counts, the interval and the rule.
    """

    tripped: bool
    kept: int
    removed: int
    low: float
    high: float
    break_even: float
    reason: str


def judge_tag(
    kept: int, removed: int, costs: EditCosts | None = None, config: GuardConfig | None = None
) -> GuardVerdict:
    """Trip when the keep rate's interval lies wholly below the break-even point.

    Example:
        >>> judge_tag(kept=5, removed=15).tripped, judge_tag(kept=7, removed=13).tripped
        (True, False)
    """
    c, cfg = costs or EditCosts(), config or GuardConfig()
    low, high = keep_rate_interval(kept, removed, cfg.confidence)
    n, b = kept + removed, c.break_even
    counts = f"kept {kept} of {n} showings"
    if n < cfg.min_shown:
        reason = f"{counts}: too few to judge (needs {cfg.min_shown})"
        tripped = False
    elif high < b:
        reason = (
            f"{counts}: keep rate {kept / n:.0%} (interval {low:.0%}-{high:.0%}) is below the break-even {b:.0%}, "
            "so showing it costs annotators more than it saves"
        )
        tripped = True
    else:
        reason = f"{counts}: keep rate {kept / n:.0%} (interval {low:.0%}-{high:.0%}) may reach the break-even {b:.0%}"
        tripped = False
    return GuardVerdict(tripped, kept, removed, low, high, b, reason)


def brier_scores(served: ArrayLike, refit: ArrayLike, answers: ArrayLike) -> tuple[float, float] | None:
    """Brier scores (mean squared error against the answers) of served and refit probabilities.

    Args:
        served: The probabilities shown to annotators (those that tripped the guard).
        refit: The same entries under a newer calibration or model.
        answers: Whether each was kept (true) or removed.

    Returns:
        ``(served, refit)``; None without answers.

    Raises:
        PreannotationError: The three differ in shape, or a probability is invalid.
    """
    s, r = probabilities_of(served), probabilities_of(refit)
    y = np.asarray(answers, dtype=np.float64)
    if not s.shape == r.shape == y.shape:
        raise PreannotationError(
            f"served {s.shape}, refit {r.shape} and answers {y.shape} differ", fix="pass one entry per answer"
        )
    if y.size == 0:
        return None
    return float(np.mean((s - y) ** 2)), float(np.mean((r - y) ** 2))


def predicts_better(served: ArrayLike, refit: ArrayLike, answers: ArrayLike) -> bool:
    """Whether refit probabilities predict a tag's answers better than the served ones (Brier score).

    Args:
        served: The probabilities shown to annotators (those that tripped the guard).
        refit: The same entries under a newer calibration or model.
        answers: Whether each was kept (true) or removed.

    Returns:
        True when the refit Brier score is lower; False without answers.
    """
    scores = brier_scores(served, refit, answers)
    return scores is not None and scores[1] < scores[0]
