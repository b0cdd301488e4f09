"""A project's calibration refit from its annotations: shifts corrected, shrinkage, per tag and pooled."""

from __future__ import annotations

import numpy as np
import pytest

from preannotation import (
    PreannotationError,
    Recalibration,
    RecalibrationConfig,
    fit_recalibration,
    reliability,
)
from preannotation.logistic import logit, sigmoid


def _shifted_answers(p: np.ndarray, rng: np.random.Generator, slope: float = 0.6, shift: float = -1.2) -> np.ndarray:
    """Answers of a project where the model overstates confidence: truth ~ sigmoid(0.6·logit(p) - 1.2)."""
    return rng.random(p.shape) < sigmoid(slope * logit(p) + shift)


def test_a_score_shift_is_corrected_after_n_annotations():
    rng = np.random.default_rng(0)
    tags = [f"t{j}" for j in range(6)]
    # 40 annotated tasks x 6 scored tags = 240 answers.
    train_p = rng.beta(0.8, 0.8, size=(40, 6))
    train_y = _shifted_answers(train_p, rng)
    test_p = rng.beta(0.8, 0.8, size=(2000, 6))
    test_y = _shifted_answers(test_p, rng)
    before = reliability(test_p, test_y)
    fit = fit_recalibration(np.repeat([tags], 40, axis=0).ravel(), train_p.ravel(), train_y.ravel())
    after = reliability(fit.apply(test_p, tags), test_y)
    assert before.ece > 0.15 and before.overconfidence > 0.15
    assert after.ece < 0.06
    assert abs(after.overconfidence) < 0.08
    assert fit.answers == 240 and not fit.is_identity


def test_few_answers_stay_near_the_identity_and_many_follow_the_data():
    rng = np.random.default_rng(1)
    p = rng.beta(0.8, 0.8, size=5000)
    y = _shifted_answers(p, rng)
    few = fit_recalibration(["x"] * 8, p[:8], y[:8]).pooled
    many = fit_recalibration(["x"] * 5000, p, y).pooled
    assert abs(few.slope - 1.0) < 0.3 and abs(few.intercept) < 0.4
    assert many.slope == pytest.approx(0.6, abs=0.1) and many.intercept == pytest.approx(-1.2, abs=0.2)


def test_a_tag_with_enough_answers_gets_its_own_map_and_novel_tags_use_the_pooled_one():
    rng = np.random.default_rng(2)
    p = rng.beta(0.8, 0.8, size=600)
    bad = np.arange(600) % 3 == 0  # tag "bad" is kept far less often than its probability says
    y = np.where(bad, rng.random(600) < 0.1 * p, rng.random(600) < p)
    names = np.where(bad, "bad", "good")
    fit = fit_recalibration(names, p, y, config=RecalibrationConfig(min_tag_answers=50))
    assert set(fit.tags) == {"bad", "good"}
    probe = np.array([[0.8, 0.8, 0.8]])
    out = fit.apply(probe, ["bad", "good", "novel"])
    assert out[0, 0] < 0.3 < 0.6 < out[0, 1]
    assert out[0, 2] == pytest.approx(float(fit.pooled.apply(np.array([0.8]))[0]))


def test_maps_are_monotone_and_the_identity_changes_nothing():
    rng = np.random.default_rng(4)
    p = rng.random(300)
    fit = fit_recalibration(["a"] * 300, p, rng.random(300) < 0.5)
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(fit.pooled.apply(grid)) >= -1e-12)
    assert np.array_equal(Recalibration().apply(grid[None, :], [str(i) for i in range(101)])[0], grid)
    assert fit_recalibration([], [], []).is_identity


def test_round_trip_and_bad_records():
    rng = np.random.default_rng(5)
    p = rng.random(100)
    fit = fit_recalibration(
        ["a", "b"] * 50, p, rng.random(100) < p, model_version="v3", config=RecalibrationConfig(min_tag_answers=10)
    )
    again = Recalibration.from_dict(fit.to_dict())
    assert again == fit and again.model_version == "v3"
    with pytest.raises(PreannotationError, match="format"):
        Recalibration.from_dict({"format": "other"})
    broken = fit.to_dict()
    broken["pooled"]["slope"] = -1
    with pytest.raises(PreannotationError, match="Refit it"):
        Recalibration.from_dict(broken)
    with pytest.raises(PreannotationError, match="one tag, one probability and one answer"):
        fit_recalibration(["a"], [0.1, 0.2], [True, False])
    with pytest.raises(PreannotationError, match="do not match 1 tags"):
        fit.apply([0.1, 0.2], ["a"])
