"""Annotation effort against labeling from scratch, counted from what was shown and what was kept.

An annotator who opens a pre-annotated task and saves the tags ``final`` made, per tag:

- **kept**: shown and kept (from scratch this tag would have cost an add; here nothing);
- **removed**: shown and removed (an edit that labeling from scratch would not have needed);
- **added**: not shown and added (an edit in both cases).

So the task took ``removed + added`` edits, against ``kept + added`` (one per true tag) from
scratch. The share of work saved is ``1 - edits / scratch``; it is negative when the
pre-annotation cost more than it saved. With unequal :class:`~preannotation.costs.EditCosts`,
removes weigh ``c_remove`` and adds (also from scratch) ``c_add``.

Precision of the shown tags is ``kept / (kept + removed)``, recall ``kept / (kept + added)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

from preannotation.costs import EditCosts, PreannotationError

__all__ = ["EffortTotals", "TagEffort", "TaskEdits"]


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class TaskEdits:
    """What one annotator did with one task's pre-annotation, per tag.

    Attributes:
        kept: Shown and kept.
        removed: Shown and removed.
        added: Not shown and added.
    """

    kept: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    added: frozenset[str] = frozenset()

    @classmethod
    def compare(cls, shown: Iterable[str], final: Iterable[str]) -> TaskEdits:
        """The edits that turned the shown tags into the final ones.

        Example:
            >>> e = TaskEdits.compare(shown=["cat", "dog"], final=["cat", "sofa"])
            >>> sorted(e.kept), sorted(e.removed), sorted(e.added), e.edits, e.scratch
            (['cat'], ['dog'], ['sofa'], 2, 2)
        """
        s, f = frozenset(shown), frozenset(final)
        return cls(kept=s & f, removed=s - f, added=f - s)

    @property
    def edits(self) -> int:
        """Removes plus adds."""
        return len(self.removed) + len(self.added)

    @property
    def scratch(self) -> int:
        """Edits from scratch: one add per true tag."""
        return len(self.kept) + len(self.added)

    def cost(self, costs: EditCosts | None = None) -> float:
        """The edits weighted by their costs."""
        c = costs or EditCosts()
        return len(self.removed) * c.remove + len(self.added) * c.add

    def scratch_cost(self, costs: EditCosts | None = None) -> float:
        """Labeling from scratch weighted by the add cost."""
        return self.scratch * (costs or EditCosts()).add

    def costlier(self, costs: EditCosts | None = None) -> bool:
        """True when this pre-annotation cost more than labeling from scratch would have."""
        return self.cost(costs) > self.scratch_cost(costs)


@dataclass(frozen=True)
class TagEffort:
    """One tag's counts over many tasks.

    Attributes:
        kept: Tasks where it was shown and kept.
        removed: Shown and removed.
        added: Not shown and added.
    """

    kept: int = 0
    removed: int = 0
    added: int = 0

    def __add__(self, other: TagEffort) -> TagEffort:
        return TagEffort(self.kept + other.kept, self.removed + other.removed, self.added + other.added)

    @property
    def shown(self) -> int:
        """Times it was shown."""
        return self.kept + self.removed

    @property
    def present(self) -> int:
        """Times it was in the final annotation."""
        return self.kept + self.added

    @property
    def precision(self) -> float | None:
        """Share of its showings that were kept (None when never shown)."""
        return _ratio(self.kept, self.shown)

    @property
    def recall(self) -> float | None:
        """Share of its true occurrences that were shown (None when never present)."""
        return _ratio(self.kept, self.present)

    def saved(self, costs: EditCosts | None = None) -> float:
        """Work it saved against from scratch: ``kept · c_add - removed · c_remove`` (negative: it cost)."""
        c = costs or EditCosts()
        return self.kept * c.add - self.removed * c.remove


@dataclass(frozen=True)
class EffortTotals:
    """Effort over many tasks, against labeling them from scratch.

    Attributes:
        tasks: Annotated tasks counted.
        kept: Shown tags kept, over all tasks.
        removed: Shown tags removed.
        added: Tags added that were not shown.
        costlier_tasks: Tasks whose pre-annotation cost more than labeling from scratch (under
            the costs they were counted with).
    """

    tasks: int = 0
    kept: int = 0
    removed: int = 0
    added: int = 0
    costlier_tasks: int = 0

    @classmethod
    def of(cls, tasks: Iterable[TaskEdits], costs: EditCosts | None = None) -> EffortTotals:
        """The totals of some tasks' edits."""
        n = kept = removed = added = costlier = 0
        for t in tasks:
            n += 1
            kept, removed, added = kept + len(t.kept), removed + len(t.removed), added + len(t.added)
            costlier += t.costlier(costs)
        return cls(n, kept, removed, added, costlier)

    @classmethod
    def from_arrays(cls, shown: ArrayLike, truth: ArrayLike, costs: EditCosts | None = None) -> EffortTotals:
        """The totals of ``(n_tasks, n_tags)`` boolean arrays of shown and true (final) tags.

        Raises:
            PreannotationError: The arrays differ in shape or are not two-dimensional.
        """
        s, t = np.asarray(shown, dtype=bool), np.asarray(truth, dtype=bool)
        if s.shape != t.shape or s.ndim != 2:
            raise PreannotationError(
                f"shown {s.shape} and truth {t.shape} must be (n_tasks, n_tags) arrays of one shape",
                fix="pass one row per task and one column per tag in both",
            )
        c = costs or EditCosts()
        kept, removed, added = (s & t).sum(axis=1), (s & ~t).sum(axis=1), (~s & t).sum(axis=1)
        costlier = removed * c.remove + added * c.add > (kept + added) * c.add
        return cls(int(s.shape[0]), int(kept.sum()), int(removed.sum()), int(added.sum()), int(costlier.sum()))

    def __add__(self, other: EffortTotals) -> EffortTotals:
        return EffortTotals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def edits(self) -> int:
        """Removes plus adds."""
        return self.removed + self.added

    @property
    def scratch(self) -> int:
        """Edits from scratch: the true tags."""
        return self.kept + self.added

    @property
    def edits_per_task(self) -> float | None:
        """Mean edits per task (None without tasks)."""
        return _ratio(self.edits, self.tasks)

    @property
    def scratch_per_task(self) -> float | None:
        """Mean true tags per task: the from-scratch baseline."""
        return _ratio(self.scratch, self.tasks)

    @property
    def ratio(self) -> float | None:
        """Edits against from scratch (1.0: no saving; above 1: pre-annotation cost more)."""
        return _ratio(self.edits, self.scratch)

    def cost_ratio(self, costs: EditCosts | None = None) -> float | None:
        """The cost-weighted :attr:`ratio`."""
        c = costs or EditCosts()
        return _ratio(self.removed * c.remove + self.added * c.add, self.scratch * c.add)

    @property
    def saved_share(self) -> float | None:
        """``1 - ratio``: the share of labeling work saved (negative when it cost more)."""
        r = self.ratio
        return None if r is None else 1.0 - r

    @property
    def precision(self) -> float | None:
        """Share of shown tags kept."""
        return _ratio(self.kept, self.kept + self.removed)

    @property
    def recall(self) -> float | None:
        """Share of true tags that were shown."""
        return _ratio(self.kept, self.kept + self.added)

    @property
    def costlier_share(self) -> float | None:
        """Share of tasks where pre-annotation cost more than labeling from scratch."""
        return _ratio(self.costlier_tasks, self.tasks)

    def summary(self) -> dict[str, float | int | None]:
        """JSON-ready counts and derived figures (rounded to 4 decimals)."""

        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "tasks": self.tasks,
            "kept": self.kept,
            "removed": self.removed,
            "added": self.added,
            "edits": self.edits,
            "scratch": self.scratch,
            "edits_per_task": r(self.edits_per_task),
            "scratch_per_task": r(self.scratch_per_task),
            "ratio": r(self.ratio),
            "saved_share": r(self.saved_share),
            "precision": r(self.precision),
            "recall": r(self.recall),
            "costlier_tasks": self.costlier_tasks,
            "costlier_share": r(self.costlier_share),
        }
