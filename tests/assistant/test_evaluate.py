"""The ML-ZSL protocol of docs/method.md §8: hand-computed cases, properties and a real label distribution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from assistant.errors import DataError
from assistant.evaluate import (
    ap_by_label,
    average_precision,
    evaluate,
    evaluate_gzsl,
    evaluate_zsl,
    map_difference,
    per_label_ap,
    top_k,
    validate_inputs,
)

# --- hand-computed cases -----------------------------------------------------------------------


def test_ap_excludes_unknown_entries():
    # Known rows ranked: + (0.9), - (0.7), + (0.6), - (0.5): AP = (1/1 + 2/3) / 2 = 5/6.
    # Counting the 0 at 0.8 as a negative would give (1 + 2/4) / 2 = 0.75 instead.
    ap = average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, -1, 1, -1])
    assert ap == pytest.approx(5 / 6, abs=1e-12)


def test_class_without_positive_has_ap_zero_and_stays_in_the_mean():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.1, 0.3, 0.9]])
    targets = np.array([[1, -1, -1], [-1, 1, 0], [-1, -1, -1]])
    ap = per_label_ap(scores, targets)
    np.testing.assert_allclose(ap, [1.0, 1.0, 0.0], atol=1e-12)
    assert evaluate(scores, targets, ks=(1,))["mAP"] == pytest.approx(200 / 3, abs=1e-9)


def test_ties_rank_earlier_rows_first():
    # Equal scores keep row order (stable sort): a negative in row 0 outranks the tied positive.
    assert average_precision([0.5, 0.5, 0.1], [-1, 1, -1]) == pytest.approx(0.5, abs=1e-12)
    assert average_precision([0.5, 0.5, 0.1], [1, -1, -1]) == pytest.approx(1.0, abs=1e-12)


def test_many_ties_follow_row_and_column_order():
    # 200 entries on 3 score levels: an unstable sort (numpy's quicksort) reorders most ties.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, 200).astype(np.float64)
    targets = rng.choice([1, -1], 200)
    ranked = targets[sorted(range(200), key=lambda i: (-scores[i], i))] == 1
    expected = np.mean((np.cumsum(ranked) / np.arange(1, 201))[ranked])
    assert average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)
    rows = rng.integers(0, 2, (50, 40)).astype(np.float64)
    row_targets = rng.choice([1, -1], (50, 40))
    tp = sum(int(row_targets[i, min(range(40), key=lambda j: (-rows[i, j], j))] == 1) for i in range(50))
    assert top_k(rows, row_targets, 1).tp == tp


# img0 has one hit in its top 2; img1 has no positive at all (adds K misses); img2 has two hits.
F1_SCORES = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.9, 0.8], [0.3, 0.9, 0.4, 0.1]])
F1_TARGETS = np.array([[1, -1, 1, -1], [-1, -1, -1, -1], [0, 1, 1, -1]])


def test_top_k_counts_images_without_positives():
    r = top_k(F1_SCORES, F1_TARGETS, 2)
    assert (r.tp, r.n_predicted, r.n_positive) == (3, 6, 4)
    assert r.precision == pytest.approx(0.5, abs=1e-12)
    assert r.recall == pytest.approx(0.75, abs=1e-12)
    assert r.f1 == pytest.approx(0.6, abs=1e-12)
    r1 = top_k(F1_SCORES, F1_TARGETS, 1)
    assert (r1.precision, r1.recall) == pytest.approx((2 / 3, 0.5), abs=1e-12)
    assert r1.f1 == pytest.approx(4 / 7, abs=1e-12)


def test_evaluate_reports_percent_with_keys_in_order():
    result = evaluate(F1_SCORES, F1_TARGETS, ks=(1, 2))
    assert list(result) == ["mAP", "F1@1", "P@1", "R@1", "F1@2", "P@2", "R@2"]
    assert result["F1@2"] == pytest.approx(60.0, abs=1e-9)
    assert result["P@2"] == pytest.approx(50.0, abs=1e-9)
    assert result["R@2"] == pytest.approx(75.0, abs=1e-9)
    # Column APs: [1 (0 row excluded), 1, 1/2 + ... see below, 0 (no positive)].
    # Column 2: + at 0.4 (rank 2 of known rows 0.9-, 0.4+, 0.1+) and 0.1 (rank 3): (1/2 + 2/3) / 2.
    expected = np.array([1.0, 1.0, (1 / 2 + 2 / 3) / 2, 0.0])
    np.testing.assert_allclose(per_label_ap(F1_SCORES, F1_TARGETS), expected, atol=1e-12)
    assert result["mAP"] == pytest.approx(100 * expected.mean(), abs=1e-9)


def test_top_k_unknown_and_tied_entries():
    # A top-K slot on an unknown (0) entry is a miss, as in the reference.
    assert top_k([[0.9, 0.1]], [[0, 1]], 1).tp == 0
    # Tied labels: the earlier column wins the slot.
    assert top_k([[0.5, 0.5, 0.1]], [[-1, 1, -1]], 1).tp == 0
    assert top_k([[0.5, 0.5, 0.1]], [[1, -1, -1]], 1).tp == 1


def test_no_positive_at_all_gives_zero_not_nan():
    r = top_k([[0.2, 0.1]], [[-1, -1]], 1)
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)


def test_inputs_are_not_mutated_and_read_only_arrays_work():
    scores = F1_SCORES.copy()
    targets = F1_TARGETS.copy()
    scores.setflags(write=False)
    targets.setflags(write=False)
    evaluate(scores, targets, ks=(1, 2, 3))
    evaluate(scores, targets, ks=(1,), open_images=True)
    np.testing.assert_array_equal(scores, F1_SCORES)
    np.testing.assert_array_equal(targets, F1_TARGETS)


# img2 has no positive: Open Images drops it. Column 2 is all unknown: excluded from the mean.
OI_SCORES = np.array([[0.9, 0.3, 0.5], [0.6, 0.4, 0.2], [0.95, 0.1, 0.3], [0.5, 0.2, 0.7]])
OI_TARGETS = np.array([[1, -1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]])


def test_open_images_variant():
    result = evaluate(OI_SCORES, OI_TARGETS, ks=(1,), open_images=True)
    # Kept rows 0, 1, 3. Column 0: + (0.9), - (0.6), + (0.5): AP 5/6. Column 1: AP 1.
    assert result["mAP"] == pytest.approx(100 * (5 / 6 + 1) / 2, abs=1e-9)
    # Weighted by positives (2 and 1): (2 * 5/6 + 1 * 1) / 3 = 8/9.
    assert result["mAP_weighted"] == pytest.approx(100 * 8 / 9, abs=1e-9)
    # Top-1: row 0 col 0 (+), row 1 col 0 (-), row 3 col 2 (unknown): 1 hit of 3; 3 positives.
    assert result["P@1"] == pytest.approx(100 / 3, abs=1e-9)
    assert result["R@1"] == pytest.approx(100 / 3, abs=1e-9)


def test_standard_protocol_on_the_same_data_keeps_everything():
    result = evaluate(OI_SCORES, OI_TARGETS, ks=(1,))
    # Column 0 with row 2: - (0.95), + (0.9), - (0.6), + (0.5): AP (1/2 + 2/4) / 2 = 0.5.
    # Column 1: AP 1; column 2: no positive, AP 0 kept: mAP = 1.5 / 3.
    assert result["mAP"] == pytest.approx(50.0, abs=1e-9)
    assert "mAP_weighted" not in result


def test_open_images_needs_a_positive():
    with pytest.raises(DataError, match="No image has a positive"):
        evaluate([[0.1, 0.2]], [[-1, 0]], ks=(1,), open_images=True)


# --- ZSL / GZSL ----------------------------------------------------------------------------------

LABELS = ["cat", "dog", "car", "tree"]
SEEN = np.array([True, False, True, False])


def test_map_difference_is_paired_and_brackets_the_observed_margin():
    rng = np.random.default_rng(0)
    targets = np.where(rng.random((300, 4)) < 0.3, 1, -1).astype(np.int8)
    noise = rng.normal(size=targets.shape)
    better, worse = targets + 0.5 * noise, targets + 2.0 * noise
    diff = map_difference(better, worse, targets, resamples=100)
    expected = 100 * (per_label_ap(better, targets).mean() - per_label_ap(worse, targets).mean())
    assert diff.difference == pytest.approx(expected, abs=1e-9)
    assert 0 < diff.low < diff.difference < diff.high  # clearly better: the interval excludes 0
    same = map_difference(worse, worse, targets, resamples=20)
    assert same.difference == same.low == same.high == 0.0  # paired: identical methods never differ
    with pytest.raises(DataError):
        map_difference(better, worse[:, :3], targets)


def test_zsl_uses_unseen_columns_only():
    rng = np.random.default_rng(0)
    scores = rng.random((30, 4))
    targets = np.where(rng.random((30, 4)) < 0.4, 1, -1)
    expected = evaluate(scores[:, [1, 3]], targets[:, [1, 3]], ks=(1, 2))
    assert evaluate_zsl(scores, targets, LABELS, SEEN, ks=(1, 2)) == pytest.approx(expected, abs=1e-9)
    # Unseen-only scores (the MKT way: unseen labels scored as their own vocabulary).
    assert evaluate_zsl(scores[:, [1, 3]], targets, LABELS, SEEN, ks=(1, 2)) == pytest.approx(expected, abs=1e-9)
    assert evaluate_gzsl(scores, targets, LABELS, ks=(1, 2)) == pytest.approx(evaluate(scores, targets, (1, 2)))


def test_zsl_validation():
    scores, targets = np.zeros((2, 4)), np.ones((2, 4))
    with pytest.raises(DataError, match="No unseen label"):
        evaluate_zsl(scores, targets, LABELS, np.ones(4, dtype=bool), ks=(1,))
    with pytest.raises(DataError, match="seen mask"):
        evaluate_zsl(scores, targets, LABELS, [1, 0, 1, 0], ks=(1,))
    with pytest.raises(DataError, match="columns"):
        evaluate_zsl(np.zeros((2, 3)), targets, LABELS, SEEN, ks=(1,))
    with pytest.raises(DataError, match="K = 3"):
        evaluate_zsl(scores, targets, LABELS, SEEN, ks=(3,))
    with pytest.raises(DataError, match="label names"):
        evaluate_gzsl(scores, targets, LABELS[:3], ks=(1,))


def test_ap_by_label_maps_names():
    result = ap_by_label([[0.9, 0.1], [0.1, 0.9]], [[1, -1], [-1, -1]], ["cat", "dog"])
    assert result == pytest.approx({"cat": 1.0, "dog": 0.0}, abs=1e-12)
    with pytest.raises(DataError, match="repeat"):
        ap_by_label([[0.9, 0.1]], [[1, -1]], ["cat", "cat"])


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "targets", "match"),
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), "shape"),
        (np.zeros(3), np.zeros(3), "2-D"),
        (np.zeros((2, 2)), np.array([[1, 2], [0, -1]]), r"found \[2\]"),
        (np.array([[np.nan, 0.0]]), np.array([[1, -1]]), "NaN"),
        (np.zeros((1, 2)), np.array([[True, False]]), "boolean"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "Nothing to evaluate"),
        (np.zeros((1, 2)), np.array([["a", "b"]]), "numeric"),
    ],
)
def test_validation_errors(scores, targets, match):
    with pytest.raises(DataError, match=match):
        validate_inputs(scores, targets)


@pytest.mark.parametrize("k", [0, 4, -1])
def test_k_outside_the_label_count(k):
    with pytest.raises(DataError, match=f"K = {k}"):
        evaluate(np.zeros((2, 3)), np.ones((2, 3)), ks=(k,))


def test_float_targets_and_inf_scores_are_accepted():
    result = evaluate([[np.inf, 0.0], [-np.inf, 1.0]], [[1.0, -1.0], [-1.0, 1.0]], ks=(1,))
    assert result["mAP"] == pytest.approx(100.0, abs=1e-9)


# --- properties ------------------------------------------------------------------------------------


def _brute_force_ap(scores: NDArray[Any], targets: NDArray[Any]) -> float:
    """AP without sorting: precision at a positive = known entries scored >= it that are positive."""
    known = targets != 0
    s, pos = scores[known], targets[known] == 1
    if not pos.any():
        return 0.0
    return float(np.mean([np.sum(pos & (s >= v)) / np.sum(s >= v) for v in s[pos]]))


@st.composite
def matrices(draw, distinct: bool = False):
    n = draw(st.integers(1, 12))
    c = draw(st.integers(1, 6))
    targets = draw(hnp.arrays(np.int8, (n, c), elements=st.sampled_from([-1, 0, 1])))
    if distinct:
        order = draw(st.permutations(range(n * c)))
        scores = np.asarray(order, dtype=np.float64).reshape(n, c) / (n * c)
    else:
        scores = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-1, 1, allow_nan=False)))
    return scores, targets


@settings(max_examples=100, deadline=None)
@given(matrices())
def test_ap_is_a_fraction(data):
    ap = per_label_ap(*data)
    assert np.all((ap >= 0.0) & (ap <= 1.0))


@settings(max_examples=100, deadline=None)
@given(matrices(distinct=True))
def test_ap_matches_an_independent_computation(data):
    scores, targets = data
    expected = [_brute_force_ap(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    np.testing.assert_allclose(per_label_ap(scores, targets), expected, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(matrices(), st.data())
def test_perfect_ranking_gives_100(data, draw):
    scores, targets = data
    targets = targets.copy()
    targets[0, :] = 1  # every class gets a positive
    noise = draw.draw(hnp.arrays(np.float64, targets.shape, elements=st.floats(0, 0.5)))
    # Any scores that put every +1 above every -1 of its column rank perfectly.
    assert evaluate(targets + noise, targets, ks=(1,))["mAP"] == pytest.approx(100.0, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(matrices(distinct=True), st.randoms(use_true_random=False))
def test_permuting_images_keeps_map(data, rnd):
    scores, targets = data
    perm = list(range(scores.shape[0]))
    rnd.shuffle(perm)
    np.testing.assert_allclose(per_label_ap(scores[perm], targets[perm]), per_label_ap(scores, targets), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(matrices(), st.data())
def test_unknown_entries_do_not_affect_ap(data, draw):
    scores, targets = data
    other = draw.draw(hnp.arrays(np.float64, scores.shape, elements=st.floats(-5, 5, allow_nan=False)))
    changed = np.where(targets == 0, other, scores)
    np.testing.assert_allclose(per_label_ap(changed, targets), per_label_ap(scores, targets), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(matrices(), st.integers(1, 6))
def test_precision_times_nk_is_tp(data, k):
    scores, targets = data
    n, c = scores.shape
    k = min(k, c)
    r = top_k(scores, targets, k)
    assert r.precision * n * k == pytest.approx(r.tp, abs=1e-9)
    # TP counted independently: per image, labels by (descending score, column index).
    tp = sum(int(targets[i, j] == 1) for i in range(n) for j in sorted(range(c), key=lambda j: (-scores[i, j], j))[:k])
    assert r.tp == tp
    assert r.n_positive == int((targets == 1).sum())


# --- a real label distribution (COCO128) ----------------------------------------------------------


def _coco128_targets(root: Path) -> tuple[NDArray[Any], list[str]]:
    classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(classes)}
    rows = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines() if line.strip()]
    targets = -np.ones((len(rows), len(classes)), dtype=np.int8)
    for r, row in enumerate(rows):
        for label in row["labels"]:
            targets[r, index[label]] = 1
    return targets, classes


def test_coco128_random_and_perfect_scores(shared_datasets):
    targets, classes = _coco128_targets(shared_datasets / "coco128")
    assert targets.shape == (256, 80)
    n = targets.shape[0]
    n_pos = (targets == 1).sum(axis=0)
    has_pos = n_pos > 0
    assert 0 < has_pos.sum() < 80  # COCO128 misses a few of the 80 classes: the AP-0 case is real
    # Expected AP of a random ranking with R positives among n (Bestgen 2015):
    # E[AP] = ((R-1)/(n-1) * (n - H_n) + H_n) / n, which is above the prevalence R/n for small R.
    h_n = np.sum(1.0 / np.arange(1, n + 1))
    expected_ap = np.where(has_pos, ((n_pos - 1) / (n - 1) * (n - h_n) + h_n) / n, 0.0)
    rng = np.random.default_rng(0)
    maps = [evaluate(rng.random(targets.shape), targets, ks=(3,))["mAP"] for _ in range(20)]
    # The mean over 20 draws has a standard error of ~0.08 points here.
    assert np.mean(maps) == pytest.approx(100 * expected_ap.mean(), abs=0.5)

    ap = ap_by_label(targets.astype(np.float64), targets, classes)
    assert all(ap[c] == pytest.approx(1.0) for c in np.array(classes)[has_pos])
    assert all(ap[c] == 0.0 for c in np.array(classes)[~has_pos])
    result = evaluate(targets.astype(np.float64), targets)
    assert result["mAP"] == pytest.approx(100 * has_pos.mean(), abs=1e-9)
