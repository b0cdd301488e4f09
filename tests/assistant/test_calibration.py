"""Calibrator: Platt maps per label with a global fallback, F1-optimal thresholds, JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from assistant.calibration import Calibrator, FitConfig
from assistant.errors import ConfigError, DataError

# Raw cosine-like scores in [0, 0.5] with steep, label-specific true maps (slope, intercept).
TRUE_MAPS = {"cat": (40.0, -10.0), "dog": (80.0, -24.0)}


def _sigmoid(x: NDArray[Any]) -> NDArray[Any]:
    out: NDArray[Any] = 1.0 / (1.0 + np.exp(-x))
    return out


def _logistic_data(n: int, seed: int = 0) -> tuple[NDArray[Any], NDArray[Any]]:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 0.5, size=(n, len(TRUE_MAPS)))
    targets = np.empty(scores.shape, dtype=np.int8)
    for c, (a, b) in enumerate(TRUE_MAPS.values()):
        targets[:, c] = np.where(rng.random(n) < _sigmoid(a * scores[:, c] + b), 1, -1)
    return scores, targets


@pytest.fixture(scope="module")
def fitted() -> tuple[Calibrator, NDArray[Any], NDArray[Any]]:
    scores, targets = _logistic_data(20_000)
    return Calibrator.fit(scores, targets, list(TRUE_MAPS)), scores, targets


def test_fitted_probabilities_match_the_true_ones(fitted):
    cal, _, _ = fitted
    grid = np.linspace(0.0, 0.5, 51)
    probs = cal.apply(np.stack([grid, grid], axis=1), list(TRUE_MAPS))
    for c, (a, b) in enumerate(TRUE_MAPS.values()):
        # 20k samples per label: the fitted curve stays within ~0.02 of the truth everywhere.
        np.testing.assert_allclose(probs[:, c], _sigmoid(a * grid + b), atol=0.03)
    assert all(v.fitted for v in cal.labels.values())


def _best_f1(p: NDArray[Any], y: NDArray[Any]) -> float:
    best = 0.0
    for thr in np.unique(p):
        pred = p >= thr
        tp = np.sum(pred & y)
        best = max(best, 2 * tp / (pred.sum() + y.sum()))
    return float(best)


def _f1(pred: NDArray[Any], y: NDArray[Any]) -> float:
    return float(2 * np.sum(pred & y) / (pred.sum() + y.sum()))


def test_thresholds_maximise_f1_on_the_fit_data():
    scores, targets = _logistic_data(2_000, seed=3)  # small: the brute force below is quadratic
    cal = Calibrator.fit(scores, targets, list(TRUE_MAPS))
    probs = cal.apply(scores, list(TRUE_MAPS))
    for c, name in enumerate(TRUE_MAPS):
        y = targets[:, c] == 1
        best = _best_f1(probs[:, c], y)
        assert _f1(probs[:, c] >= cal.thresholds([name])[0], y) == pytest.approx(best, abs=1e-12)
        # With calibrated probabilities the F1-optimal threshold is about half the best F1
        # (Lipton et al. 2014), here ~0.47; a tolerance covers the sampling noise of 2k entries.
        assert cal.labels[name].threshold == pytest.approx(best / 2, abs=0.08)
    # The global threshold maximises the pooled F1 under the global map.
    p = _sigmoid(cal.slope * scores.ravel() + cal.intercept)
    y = targets.ravel() == 1
    assert _f1(p >= cal.threshold, y) == pytest.approx(_best_f1(p, y), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_thresholds_with_tied_scores_decide_whole_ties(seed):
    # Scores on 6 levels: many ties, which must all get the same decision; the chosen cut is
    # still the F1 optimum among the cuts between distinct values.
    scores, targets = _logistic_data(300, seed=seed)
    scores = np.round(scores * 10) / 10
    cal = Calibrator.fit(scores, targets, list(TRUE_MAPS))
    probs = cal.apply(scores, list(TRUE_MAPS))
    for c, name in enumerate(TRUE_MAPS):
        y = targets[:, c] == 1
        best = _best_f1(probs[:, c], y)
        assert _f1(probs[:, c] >= cal.thresholds([name])[0], y) == pytest.approx(best, abs=1e-12)


def test_unknown_labels_and_thin_labels_use_the_global_map():
    scores, targets = _logistic_data(2_000)
    # A third label with only 3 positives: below min_positives (5), so it falls back.
    thin_scores = np.linspace(0.0, 0.5, 2_000)[:, None]
    thin = -np.ones((2_000, 1), dtype=np.int8)
    thin[-3:] = 1
    cal = Calibrator.fit(np.hstack([scores, thin_scores]), np.hstack([targets, thin]), ["cat", "dog", "rare"])
    assert not cal.labels["rare"].fitted
    assert cal.labels["rare"].n_positive == 3
    s = np.array([[0.1, 0.2, 0.3, 0.4]])
    probs = cal.apply(s, ["cat", "rare", "novel", "dog"])
    expected_global = _sigmoid(cal.slope * s[0] + cal.intercept)
    assert probs[0, 1] == pytest.approx(expected_global[1], abs=1e-12)
    assert probs[0, 2] == pytest.approx(expected_global[2], abs=1e-12)
    assert probs[0, 0] != pytest.approx(expected_global[0], abs=1e-3)
    thr = cal.thresholds(["novel", "rare", "cat"])
    assert thr[0] == pytest.approx(cal.threshold) and thr[1] == pytest.approx(cal.threshold)
    assert thr[2] == pytest.approx(cal.labels["cat"].threshold)


def test_unknown_targets_are_ignored():
    scores, targets = _logistic_data(3_000)
    targets = targets.copy()
    targets[::4, 0] = 0
    a = Calibrator.fit(scores, targets, list(TRUE_MAPS))
    other = np.where(targets == 0, 100.0, scores)  # wild scores on unknown entries only
    b = Calibrator.fit(other, targets, list(TRUE_MAPS))
    assert a.threshold == pytest.approx(b.threshold, abs=1e-9)
    for name in TRUE_MAPS:
        la, lb = a.labels[name], b.labels[name]
        assert (la.slope, la.intercept, la.threshold) == pytest.approx((lb.slope, lb.intercept, lb.threshold), abs=1e-9)
    assert a.labels["cat"].n_positive + a.labels["cat"].n_negative == 3_000 - 750


def test_json_round_trip(fitted):
    cal, scores, _ = fitted
    restored = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert restored == cal
    names = [*TRUE_MAPS, "novel"]
    s = np.hstack([scores[:50], scores[:50, :1]])
    np.testing.assert_array_equal(restored.apply(s, names), cal.apply(s, names))
    default = Calibrator.default()
    assert Calibrator.from_dict(json.loads(json.dumps(default.to_dict()))) == default


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(format="other/1"), "Not a calibrator"),
        (lambda d: d["global"].pop("slope"), "incomplete"),
        (lambda d: d["labels"]["cat"].update(slope=-1.0), "Invalid calibration for 'cat'"),
        (lambda d: d["global"].update(threshold=1.5), "Invalid calibration"),
    ],
)
def test_from_dict_rejects_bad_descriptions(fitted, mutate, match):
    data = json.loads(json.dumps(fitted[0].to_dict()))
    mutate(data)
    with pytest.raises(DataError, match=match):
        Calibrator.from_dict(data)


def test_default_prior():
    cal = Calibrator.default(temperature=0.02, bias=0.3)
    assert cal.method == "default"
    assert cal.apply([0.3], ["x"])[0] == pytest.approx(0.5, abs=1e-12)
    assert cal.apply([0.32], ["x"])[0] == pytest.approx(_sigmoid(np.array(1.0)), abs=1e-12)
    assert cal.thresholds(["x", "y"]).tolist() == [0.5, 0.5]
    assert cal.predict([0.31, 0.29], ["x", "y"]).tolist() == [True, False]
    with pytest.raises(DataError, match="temperature"):
        Calibrator.default(temperature=0.0)


def test_anti_correlated_label_gets_a_flat_map():
    rng = np.random.default_rng(1)
    s = rng.uniform(0.0, 0.5, size=(400, 2))
    t = np.where(rng.random((400, 2)) < 0.3, 1, -1)
    t[:, 1] = np.where(s[:, 1] < 0.15, 1, -1)  # higher score, fewer positives
    cal = Calibrator.fit(s, t, ["ok", "inverted"])
    assert cal.labels["inverted"].slope == 0.0
    probs = cal.apply(np.linspace(0, 0.5, 5)[:, None] * np.ones((1, 2)), ["ok", "inverted"])
    # Flat at about the base rate (~30%): monotone, and calibrated on average.
    np.testing.assert_allclose(probs[:, 1], (t[:, 1] == 1).mean(), atol=0.03)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, (60, 3), elements=st.floats(-1, 1, allow_nan=False)),
    hnp.arrays(np.int8, (60, 3), elements=st.sampled_from([-1, 0, 1])),
)
def test_maps_are_monotone(scores, targets):
    targets = targets.copy()
    targets[:6, :] = 1
    targets[6:12, :] = -1  # enough of each for the pooled fit
    cal = Calibrator.fit(scores, targets, ["a", "b", "c"], FitConfig(min_positives=3, min_negatives=3))
    grid = np.linspace(-2, 2, 101)[:, None] * np.ones((1, 4))
    probs = cal.apply(grid, ["a", "b", "c", "novel"])
    assert all(v.slope >= 0.0 for v in cal.labels.values()) and cal.slope >= 0.0
    # numpy's vectorised exp/log are accurate to a few ULPs but not monotone at that level, so a
    # flat map may wobble by ~1e-16; anything beyond rounding would be a real inversion.
    assert np.all(np.diff(probs, axis=0) >= -1e-12)
    assert np.all((probs >= 0.0) & (probs <= 1.0))


def test_fit_validation():
    scores, targets = _logistic_data(100)
    with pytest.raises(DataError, match="Too little annotated data"):
        Calibrator.fit(scores[:3], targets[:3], list(TRUE_MAPS))
    with pytest.raises(DataError, match="label names"):
        Calibrator.fit(scores, targets, ["cat"])
    bad = scores.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Calibrator.fit(bad, targets, list(TRUE_MAPS))
    inf = scores.copy()
    inf[0, 1] = np.inf
    with pytest.raises(DataError, match="infinite"):
        Calibrator.fit(inf, targets, list(TRUE_MAPS))
    with pytest.raises(ConfigError, match="fit settings"):
        FitConfig(label_prior=0.0)
    cal = Calibrator.default()
    with pytest.raises(DataError, match="do not match"):
        cal.apply(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(DataError, match="NaN"):
        cal.apply([np.nan], ["a"])
