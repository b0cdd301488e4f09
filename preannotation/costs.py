"""What an annotator's edit costs, and the break-even probability it implies.

With tag choices, correcting a pre-annotation takes two kinds of edits: **remove** a wrong tag
that was shown, and **add** a true tag that was not. Labeling from scratch takes one add per true
tag. Showing a tag with probability ``p`` of being true therefore

- saves an add with probability ``p`` (worth ``c_add``), and
- costs a remove with probability ``1 - p`` (worth ``c_remove``),

so it pays on average exactly when ``p · c_add >= (1 - p) · c_remove``, that is when
``p >= c_remove / (c_add + c_remove)``: the **break-even point**. Equal costs give 0.5. A team
whose annotators find removing a chip twice as quick as scanning a long list for a missing tag
(``c_add = 2``, ``c_remove = 1``) shows tags from p = 1/3 on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from errors import AssistantError

__all__ = ["EditCosts", "PreannotationError"]


class PreannotationError(AssistantError, ValueError):
    """A cost, probability array or stored record of this package is unusable.

    Under the project's one error base (what / why / fix); also a ``ValueError``, as callers that
    validate input expect.
    """


@dataclass(frozen=True)
class EditCosts:
    """The cost of one add and of one remove, in any unit (clicks, seconds).

    Only their ratio matters to the decision; their unit matters to the effort figures, which
    count both edits and from-scratch labeling in it.

    Attributes:
        add: Cost of adding a true tag the pre-annotation missed (and of each tag from scratch).
        remove: Cost of removing a wrong tag the pre-annotation showed.

    Example:
        >>> EditCosts().break_even
        0.5
        >>> EditCosts(add=2.0, remove=1.0).break_even
        0.3333333333333333
    """

    add: float = 1.0
    remove: float = 1.0

    def __post_init__(self) -> None:
        for name, value in (("add", self.add), ("remove", self.remove)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise PreannotationError(
                    f"invalid edit cost {name}={value!r}",
                    why="an edit cost is a positive finite number (only the add/remove ratio decides what is shown)",
                    fix="use e.g. add=1 remove=1 (break-even 0.5) or add=2 remove=1 (break-even 1/3)",
                )

    @property
    def break_even(self) -> float:
        """The probability from which showing a tag saves work on average: ``remove / (add + remove)``."""
        return self.remove / (self.add + self.remove)

    def to_dict(self) -> dict[str, float]:
        """``{"add": ..., "remove": ...}``."""
        return {"add": self.add, "remove": self.remove}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, default: EditCosts | None = None) -> EditCosts:
        """Costs from a mapping with optional ``add`` and ``remove`` keys (strings are parsed).

        Args:
            data: E.g. the attributes of a labeling-config control, or a settings entry.
            default: Where a key is missing; :class:`EditCosts` defaults when None.

        Raises:
            PreannotationError: A value is not a positive finite number.
        """
        base = default or cls()
        values = {"add": base.add, "remove": base.remove}
        for key in values:
            raw = data.get(key)
            if raw is None:
                continue
            try:
                values[key] = float(raw)
            except (TypeError, ValueError):
                raise PreannotationError(
                    f"invalid edit cost {key}={raw!r}", fix=f"use a positive number, e.g. {key}=1"
                ) from None
        return cls(**values)
