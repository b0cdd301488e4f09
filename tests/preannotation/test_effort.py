"""Edits against labeling from scratch: per task, per tag, in total."""

from __future__ import annotations

import numpy as np
import pytest

from preannotation import EditCosts, EffortTotals, PreannotationError, TagEffort, TaskEdits


def test_a_task_counts_keeps_removes_and_adds():
    e = TaskEdits.compare(shown=["cat", "dog", "car"], final=["cat", "sofa"])
    assert (e.kept, e.removed, e.added) == ({"cat"}, {"dog", "car"}, {"sofa"})
    assert (e.edits, e.scratch) == (3, 2)
    assert e.costlier()
    assert not e.costlier(EditCosts(add=3, remove=1))  # 2 removes + 3 vs 2 x 3 from scratch
    assert e.cost(EditCosts(add=3, remove=1)) == pytest.approx(5)


def test_a_perfect_prediction_costs_nothing_and_an_empty_one_costs_scratch():
    assert TaskEdits.compare(["a", "b"], ["a", "b"]).edits == 0
    empty = TaskEdits.compare([], ["a", "b"])
    assert empty.edits == empty.scratch == 2 and not empty.costlier()


def test_totals_and_derived_figures():
    tasks = [TaskEdits.compare(["a", "b"], ["a"]), TaskEdits.compare(["a"], ["a", "c", "d"]), TaskEdits.compare([], [])]
    t = EffortTotals.of(tasks)
    # The first task ties with scratch (1 edit each): only a strictly larger cost counts as costlier.
    assert (t.tasks, t.kept, t.removed, t.added, t.costlier_tasks) == (3, 2, 1, 2, 0)
    assert t.edits_per_task == pytest.approx(1.0)
    assert t.scratch_per_task == pytest.approx(4 / 3)
    assert t.ratio == pytest.approx(0.75)
    assert t.saved_share == pytest.approx(0.25)
    assert t.precision == pytest.approx(2 / 3) and t.recall == pytest.approx(0.5)
    assert t.costlier_share == pytest.approx(0.0)
    assert (t + t).tasks == 6 and (t + t).ratio == pytest.approx(0.75)
    assert t.summary()["saved_share"] == pytest.approx(0.25)


def test_saving_can_be_negative_and_empty_totals_have_no_ratio():
    t = EffortTotals.of([TaskEdits.compare(["x", "y", "z"], ["w"])])
    assert t.ratio == pytest.approx(4.0) and t.saved_share == pytest.approx(-3.0)
    assert EffortTotals().ratio is None and EffortTotals().edits_per_task is None


def test_arrays_agree_with_sets():
    rng = np.random.default_rng(3)
    shown, truth = rng.random((50, 7)) < 0.3, rng.random((50, 7)) < 0.4
    names = [f"t{j}" for j in range(7)]
    costs = EditCosts(add=1.5, remove=1.0)

    def tags(row: np.ndarray) -> list[str]:
        return [n for n, on in zip(names, row, strict=True) if on]

    by_sets = EffortTotals.of((TaskEdits.compare(tags(s), tags(t)) for s, t in zip(shown, truth, strict=True)), costs)
    assert EffortTotals.from_arrays(shown, truth, costs) == by_sets
    with pytest.raises(PreannotationError, match="one shape"):
        EffortTotals.from_arrays(shown, truth[:, :3])


def test_tag_effort():
    tag = TagEffort(kept=3, removed=5, added=2) + TagEffort(kept=1)
    assert (tag.shown, tag.present) == (9, 6)
    assert tag.precision == pytest.approx(4 / 9) and tag.recall == pytest.approx(4 / 6)
    assert tag.saved() == pytest.approx(-1.0)
    assert tag.saved(EditCosts(add=2, remove=1)) == pytest.approx(3.0)
    assert TagEffort().precision is None
