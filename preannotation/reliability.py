"""How far probabilities are from what happened: reliability bins and the expected calibration error.

Split the probabilities into equal-width bins; in each, compare the mean probability with the
observed frequency of "true". The expected calibration error (ECE) is the count-weighted mean
gap. For pre-annotation the side that matters most is above the break-even point: there a
probability that **overstates** confidence shows tags that annotators then remove.
:attr:`Reliability.overconfidence` is the count-weighted mean of ``mean probability - frequency``
over the bins from 0.5 up (positive: the shown tags are right less often than claimed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from preannotation.costs import PreannotationError
from preannotation.rule import probabilities_of

__all__ = ["Reliability", "ReliabilityBin", "reliability"]


@dataclass(frozen=True)
class ReliabilityBin:
    """One probability bin.

    Attributes:
        low: Lower edge (inclusive).
        high: Upper edge (exclusive, except 1.0 in the last bin).
        count: Entries in it.
        mean_probability: Their mean probability (None when empty).
        frequency: The share of them that were true (None when empty).
    """

    low: float
    high: float
    count: int
    mean_probability: float | None
    frequency: float | None


@dataclass(frozen=True)
class Reliability:
    """Reliability of a set of probabilities.

    Attributes:
        bins: Equal-width bins over [0, 1].
        count: Entries in all.
        ece: Expected calibration error: ``Σ count·|mean p - frequency| / count``.
        max_gap: The largest gap of a non-empty bin.
        overconfidence: Count-weighted ``mean p - frequency`` over the bins from 0.5 up
            (None when none has entries).
    """

    bins: tuple[ReliabilityBin, ...]
    count: int
    ece: float
    max_gap: float
    overconfidence: float | None

    def summary(self) -> dict[str, object]:
        """JSON-ready figures, bins included."""
        return {
            "count": self.count,
            "ece": round(self.ece, 4),
            "max_gap": round(self.max_gap, 4),
            "overconfidence": None if self.overconfidence is None else round(self.overconfidence, 4),
            "bins": [
                {
                    "low": b.low,
                    "high": b.high,
                    "count": b.count,
                    "mean_probability": None if b.mean_probability is None else round(b.mean_probability, 4),
                    "frequency": None if b.frequency is None else round(b.frequency, 4),
                }
                for b in self.bins
            ],
        }


def reliability(probabilities: ArrayLike, outcomes: ArrayLike, bins: int = 10) -> Reliability:
    """Bin ``probabilities`` and compare each bin's mean with the frequency of ``outcomes``.

    Args:
        probabilities: Any shape, values in [0, 1].
        outcomes: Same shape, booleans (true: the tag was present).
        bins: Number of equal-width bins.

    Raises:
        PreannotationError: Shapes differ, no entries, or ``bins < 1``.
    """
    p = probabilities_of(probabilities).ravel()
    y = np.asarray(outcomes, dtype=bool).ravel()
    if p.shape != y.shape or p.size == 0 or bins < 1:
        raise PreannotationError(
            f"cannot bin {p.size} probabilities against {y.size} outcomes in {bins} bins",
            fix="pass one outcome per probability, at least one of each, and bins >= 1",
        )
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    out: list[ReliabilityBin] = []
    gaps, over, over_n = 0.0, 0.0, 0
    max_gap = 0.0
    for b in range(bins):
        rows = index == b
        n = int(rows.sum())
        low, high = b / bins, (b + 1) / bins
        if n == 0:
            out.append(ReliabilityBin(low, high, 0, None, None))
            continue
        mean_p, freq = float(p[rows].mean()), float(y[rows].mean())
        out.append(ReliabilityBin(low, high, n, mean_p, freq))
        gaps += n * abs(mean_p - freq)
        max_gap = max(max_gap, abs(mean_p - freq))
        if low >= 0.5:
            over += n * (mean_p - freq)
            over_n += n
    return Reliability(tuple(out), int(p.size), gaps / p.size, max_gap, over / over_n if over_n else None)
