"""The per-tag guard: an interval, a minimum count, and resumption when a refit predicts better."""

from __future__ import annotations

import numpy as np
import pytest

from preannotation import EditCosts, GuardConfig, PreannotationError, judge_tag, keep_rate_interval
from preannotation.guard import predicts_better


def test_wilson_interval_known_values():
    low, high = keep_rate_interval(5, 15)
    assert (low, high) == (pytest.approx(0.1119, abs=1e-3), pytest.approx(0.4687, abs=1e-3))
    assert keep_rate_interval(0, 0) == (0.0, 1.0)
    lo0, hi0 = keep_rate_interval(0, 30)
    assert lo0 == 0.0 and hi0 < 0.12


def test_it_never_trips_on_a_few_samples():
    verdict = judge_tag(kept=0, removed=3)
    assert not verdict.tripped and "too few to judge" in verdict.reason


def test_it_trips_only_when_confidently_below_break_even():
    assert judge_tag(kept=5, removed=15).tripped
    assert not judge_tag(kept=7, removed=13).tripped
    # Many showings kept 45% of the time: confidently below 0.5.
    assert judge_tag(kept=450, removed=550).tripped
    assert not judge_tag(kept=60, removed=40).tripped


def test_costs_and_settings_change_the_verdict():
    # Adds cost 3x removes: break-even 0.25, so a tag kept 35% of the time pays.
    assert not judge_tag(kept=35, removed=65, costs=EditCosts(add=3, remove=1)).tripped
    assert judge_tag(kept=35, removed=65).tripped
    assert not judge_tag(kept=5, removed=15, config=GuardConfig(min_shown=30)).tripped
    with pytest.raises(PreannotationError):
        GuardConfig(min_shown=0)


def test_predicts_better_by_brier_score():
    answers = np.array([0, 0, 0, 1, 0, 0], dtype=bool)
    served = np.full(6, 0.7)
    assert predicts_better(served, np.full(6, 0.2), answers)
    assert not predicts_better(served, np.full(6, 0.9), answers)
    assert not predicts_better([], [], [])
