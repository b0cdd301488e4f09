"""The decision rule: break-even boundary, costs, cap, suppression, and optimality among all subsets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preannotation import EditCosts, PreannotationError, expected_cost, scratch_cost, show_mask


def test_equal_costs_break_even_at_one_half_inclusive():
    assert EditCosts().break_even == pytest.approx(0.5)
    shown = show_mask([0.4999, 0.5, 0.5001, 0.0, 1.0])
    assert shown.tolist() == [False, True, True, False, True]


def test_costs_move_the_break_even_point():
    # Adding is twice as costly as removing: a tag right a third of the time already pays.
    costs = EditCosts(add=2.0, remove=1.0)
    assert costs.break_even == pytest.approx(1 / 3)
    assert show_mask([0.32, 0.34], costs).tolist() == [False, True]
    # Removing is costlier: only confident tags are shown.
    assert EditCosts(add=1.0, remove=3.0).break_even == pytest.approx(0.75)
    assert show_mask([0.74, 0.76], EditCosts(add=1.0, remove=3.0)).tolist() == [False, True]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "1"])
def test_invalid_costs_are_refused_with_a_fix(bad):
    with pytest.raises(PreannotationError, match="Fix: Use e.g. add=1 remove=1"):
        EditCosts(add=bad)


def test_costs_from_a_mapping_parse_strings_and_keep_defaults():
    assert EditCosts.from_mapping({"add": "2", "other": "x"}) == EditCosts(add=2.0, remove=1.0)
    assert EditCosts.from_mapping({}, default=EditCosts(3, 1)) == EditCosts(3, 1)
    with pytest.raises(PreannotationError, match="Invalid edit cost remove='many'"):
        EditCosts.from_mapping({"remove": "many"})


def test_an_explicit_threshold_replaces_the_break_even_point():
    assert show_mask([0.3, 0.7], threshold=0.8).tolist() == [False, False]
    assert show_mask([0.3, 0.7], EditCosts(1, 9), threshold=0.25).tolist() == [True, True]


def test_cap_keeps_the_most_probable_and_suppression_hides():
    p = np.array([[0.9, 0.6, 0.8, 0.55], [0.1, 0.95, 0.2, 0.7]])
    assert show_mask(p, max_tags=2).tolist() == [[True, False, True, False], [False, True, False, True]]
    assert show_mask(p, max_tags=0).sum() == 0
    suppressed = np.array([True, False, False, False])
    assert show_mask(p, suppressed=suppressed, max_tags=1).tolist() == [
        [False, False, True, False],
        [False, True, False, False],
    ]


def test_probabilities_must_be_probabilities():
    with pytest.raises(PreannotationError, match="not raw model scores"):
        show_mask([0.2, 1.3])
    with pytest.raises(PreannotationError):
        show_mask([float("nan")])


def test_scratch_and_expected_costs():
    p = np.array([0.9, 0.2])
    assert scratch_cost(p) == pytest.approx(1.1)
    assert expected_cost(p, [True, False]) == pytest.approx(0.1 + 0.2)
    assert expected_cost(p, [True, False], EditCosts(add=2, remove=1)) == pytest.approx(0.1 + 0.4)


@settings(max_examples=300, deadline=None)
@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    add=st.floats(0.1, 10.0),
    remove=st.floats(0.1, 10.0),
    cap=st.one_of(st.none(), st.integers(0, 8)),
)
def test_the_chosen_set_minimises_expected_edits_among_all_subsets(p, add, remove, cap):
    costs = EditCosts(add=add, remove=remove)
    chosen = show_mask(p, costs, max_tags=cap)
    best = expected_cost(p, chosen, costs)
    for size in range(len(p) + 1):
        if cap is not None and size > cap:
            break
        for subset in itertools.combinations(range(len(p)), size):
            mask = np.zeros(len(p), dtype=bool)
            mask[list(subset)] = True
            assert best <= expected_cost(p, mask, costs) + 1e-9
