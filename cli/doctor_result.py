"""What one check of `assistant doctor` found: :class:`Check`, with its status and the fix.

Its own module so that the stack's checks (``cli/doctor_checks.py``) and the project's
(``cli/doctor_project.py``) both return it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Check", "Status"]

#: ``ok``: works; ``warn``: works, but not as a user would want; ``fail``: broken (exit 1);
#: ``skip``: not checked (an earlier check failed, or it needs ``--project``).
Status = Literal["ok", "warn", "fail", "skip"]


@dataclass
class Check:
    """One check's result.

    Attributes:
        name: Its id in ``--json`` (``settings``, ``redis``, ``workers``, ...).
        title: For people.
        status: ``ok``, ``warn``, ``fail`` or ``skip``.
        detail: What it found.
        fix: What to do (for ``warn`` and ``fail``).
        data: What a script may want (worker names, URLs, versions).
    """

    name: str
    title: str
    status: Status
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
            "data": self.data,
        }
