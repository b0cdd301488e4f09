"""World v2's annotators: a team of fallible people, each with their own error rates.

World v1's annotator is perfect (and the label review's corrupted tasks were uniform flips). Real
annotators miss tags, tick wrong ones, and keep what a pre-annotation suggested. Each member of
the team has three rates:

- ``miss_rate``: each true tag of a task is left unticked with this probability;
- ``wrong_rate``: with this probability a task gets one false tag ticked that nobody suggested;
- ``automation_bias``: each wrong tag the pre-annotation showed is kept with this probability
  (the simulation's annotator of the pre-annotation issue; its default 0.05 is the team's mean).

Sources, fixed before any result: label errors in widely used test sets average 3.3% of labels
(Northcutt et al., "Pervasive Label Errors in Test Sets", arXiv 2103.14749; 6% on ImageNet's
validation set), so the team's mean miss rate is 2.5% per tag and its mean wrong-tag rate 2.75%
per task; the spread (a careful and a hasty member) is an assumption, stated here. Tasks are
dealt to the members in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["V2_TEAM", "AnnotatorProfile"]


@dataclass(frozen=True)
class AnnotatorProfile:
    """One annotator's error rates (see the module docstring)."""

    miss_rate: float
    wrong_rate: float
    automation_bias: float


# Mean miss 2.5% per tag, wrong 2.75% per task, automation bias 0.05 (the simulation's default).
V2_TEAM: Final[tuple[AnnotatorProfile, ...]] = (
    AnnotatorProfile(miss_rate=0.01, wrong_rate=0.01, automation_bias=0.02),
    AnnotatorProfile(miss_rate=0.02, wrong_rate=0.02, automation_bias=0.04),
    AnnotatorProfile(miss_rate=0.03, wrong_rate=0.03, automation_bias=0.06),
    AnnotatorProfile(miss_rate=0.04, wrong_rate=0.05, automation_bias=0.08),
)
