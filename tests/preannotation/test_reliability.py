"""Reliability bins, ECE and overconfidence."""

from __future__ import annotations

import numpy as np
import pytest

from preannotation import PreannotationError, reliability


def test_calibrated_probabilities_have_a_small_ece():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    rel = reliability(p, rng.random(20000) < p)
    assert rel.ece < 0.02 and abs(rel.overconfidence) < 0.02
    assert sum(b.count for b in rel.bins) == rel.count == 20000


def test_overconfident_probabilities_are_reported_as_such():
    rel = reliability([0.9] * 10 + [0.1] * 10, [True] * 5 + [False] * 5 + [False] * 10)
    assert rel.overconfidence == pytest.approx(0.4)
    assert rel.ece == pytest.approx((10 * 0.4 + 10 * 0.1) / 20)
    assert rel.max_gap == pytest.approx(0.4)
    assert rel.bins[9].count == 10 and rel.bins[9].frequency == pytest.approx(0.5)
    assert rel.summary()["bins"][0]["count"] == 0


def test_bad_input_is_refused():
    with pytest.raises(PreannotationError):
        reliability([], [])
    with pytest.raises(PreannotationError):
        reliability([0.1, 0.2], [True])
