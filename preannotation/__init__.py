"""Which tags to pre-annotate, and what pre-annotation saved: the product's decision rule.

A light, pure package (stdlib and numpy only) that every layer may import: the HTTP backend,
which decides what each prediction shows; the workers; the model core's rounds, whose promotion
gate compares expected edits; and the benchmark simulations, which must decide exactly as the
product does. It imports nothing else of the project.

- :mod:`preannotation.costs`: what an edit costs (:class:`EditCosts`) and the break-even point.
- :mod:`preannotation.rule`: show a tag when its probability reaches the break-even point.
- :mod:`preannotation.effort`: edits against labeling from scratch, per task, per tag, in total.
- :mod:`preannotation.recalibration`: a project's own map of the model's probabilities, refit
  from its annotations and shrunk toward the model's while answers are few.
- :mod:`preannotation.guard`: stop showing a tag that annotators remove more often than it pays.
- :mod:`preannotation.reliability`: how far probabilities are from observed frequencies (ECE).

The reasoning, the settings and how to read the numbers: ``docs/preannotation.md``.
"""

from __future__ import annotations

from preannotation.costs import EditCosts, PreannotationError
from preannotation.effort import EffortTotals, TagEffort, TaskEdits
from preannotation.guard import GuardConfig, GuardVerdict, judge_tag, keep_rate_interval
from preannotation.recalibration import REFIT_EVERY, LogitMap, Recalibration, RecalibrationConfig, fit_recalibration
from preannotation.reliability import Reliability, ReliabilityBin, reliability
from preannotation.rule import expected_cost, scratch_cost, show_mask

__all__ = [
    "REFIT_EVERY",
    "EditCosts",
    "EffortTotals",
    "GuardConfig",
    "GuardVerdict",
    "LogitMap",
    "PreannotationError",
    "Recalibration",
    "RecalibrationConfig",
    "Reliability",
    "ReliabilityBin",
    "TagEffort",
    "TaskEdits",
    "expected_cost",
    "fit_recalibration",
    "judge_tag",
    "keep_rate_interval",
    "reliability",
    "scratch_cost",
    "show_mask",
]
