"""Ordered label sets and multi-label targets in the ML-ZSL encoding (+1 / -1 / 0)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistant.errors import LabelMappingError

__all__ = ["NEGATIVE", "POSITIVE", "UNKNOWN", "LabelSet", "targets_from_sets"]

# The ML-ZSL encoding (docs/method.md §8.1): -1 is a real negative, 0 the only "unknown".
POSITIVE, NEGATIVE, UNKNOWN = 1, -1, 0


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of label names with a stable fingerprint.

    Example:
        >>> labels = LabelSet(("cat", "dog"))
        >>> labels.index("dog"), len(labels), labels.fingerprint
        (1, 2, '...')  # doctest: +SKIP
    """

    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        stripped = [n.strip() for n in names]
        if any(not n for n in stripped):
            raise LabelMappingError("a label name is empty", fix="remove empty labels from the vocabulary")
        if stripped != list(names):
            raise LabelMappingError(
                "label names must not have leading or trailing spaces",
                fix="strip the names: " + ", ".join(repr(n) for n, s in zip(names, stripped, strict=True) if n != s),
            )
        index = {name: i for i, name in enumerate(names)}
        if len(index) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise LabelMappingError(f"duplicate labels: {', '.join(dupes)}", fix="list each label once")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_index", index)

    @classmethod
    def of(cls, names: Iterable[str]) -> LabelSet:
        """Build from any iterable of names."""
        return cls(tuple(names))

    @property
    def fingerprint(self) -> str:
        """8 hex digits of SHA-256 over the ordered names (same scheme as ``state.contracts``)."""
        return hashlib.sha256("\x1f".join(self.names).encode("utf-8")).hexdigest()[:8]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """Position of a label; an unknown label is a :class:`LabelMappingError`."""
        try:
            return self._index[name]
        except KeyError:
            raise LabelMappingError(
                f"unknown label '{name}'", fix="use one of: " + ", ".join(self.names[:20])
            ) from None

    def indices(self, names: Iterable[str]) -> list[int]:
        """Positions of several labels."""
        return [self.index(n) for n in names]

    def mask(self, names: Iterable[str]) -> NDArray[Any]:
        """Boolean mask over this set, True where the label is in ``names``."""
        wanted = set(names)
        return np.array([n in wanted for n in self.names], dtype=bool)

    def subset(self, names: Iterable[str]) -> LabelSet:
        """The labels of ``names`` that are in this set, in this set's order."""
        wanted = set(names)
        return LabelSet(tuple(n for n in self.names if n in wanted))

    def union(self, other: Sequence[str]) -> LabelSet:
        """This set followed by the labels of ``other`` it lacks."""
        return LabelSet(self.names + tuple(n for n in other if n not in self._index))


def targets_from_sets(
    labels: LabelSet,
    positives: Sequence[Iterable[str]],
    negatives: Sequence[Iterable[str]] | None = None,
    *,
    default: int = NEGATIVE,
) -> NDArray[Any]:
    """An ``(images, labels)`` int8 target matrix from per-image label sets.

    Args:
        labels: The columns.
        positives: Per image, the labels present (+1).
        negatives: Per image, labels known absent (-1); only meaningful with ``default=UNKNOWN``.
        default: The value of every other entry: -1 (closed world, the annotator saw every tag)
            or 0 (unknown).
    """
    out = np.full((len(positives), len(labels)), default, dtype=np.int8)
    for row, names in enumerate(positives):
        for name in names:
            if name in labels:
                out[row, labels.index(name)] = POSITIVE
    if negatives is not None:
        for row, names in enumerate(negatives):
            for name in names:
                if name in labels and out[row, labels.index(name)] != POSITIVE:
                    out[row, labels.index(name)] = NEGATIVE
    return out
