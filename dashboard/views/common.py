"""What the dashboard's pages share: page sizes, number formats, times for people."""

from __future__ import annotations

import datetime as dt
from typing import Final

__all__ = ["PAGE_SIZE", "VERSIONS_SHOWN", "age", "num", "pct"]

#: Rows per page on the paged tables (rounds, decisions).
PAGE_SIZE: Final = 50
#: Registered versions listed on the Rounds page (newest first; the one in service always).
VERSIONS_SHOWN: Final = 20


def pct(value: float | None) -> str:
    """A share as a percentage ("–" when unknown)."""
    return "–" if value is None else f"{100 * value:.0f}%"


def num(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals ("–" when unknown)."""
    return "–" if value is None else f"{value:.{digits}f}"


def age(at: str | None, now: dt.datetime | None = None) -> str:
    """How long ago an ISO time was, for people ("3 min ago"); empty when unknown."""
    if not at:
        return ""
    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
