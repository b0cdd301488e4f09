"""The Celery workers' exception tree (no torch: the CLI and the light worker modules import it).

It derives from the project's one error base, :class:`errors.AssistantError`::

    WorkerError              base: what failed, why, and the fix
    ├── RequestError         a task payload that does not validate (permanent: never retried)
    ├── TransientError       worth retrying later (the tasks' ``autoretry_for``)
    └── MediaError           one image cannot be fetched or decoded; carries a machine ``reason``
                             and becomes an ``ImageFailure`` in the result, never a failed batch
"""

from __future__ import annotations

from errors import AssistantError

__all__ = [
    "MEDIA_REASONS",
    "MediaError",
    "RequestError",
    "TransientError",
    "WorkerError",
]

# Every reason an image can fail with (``ImageFailure.reason``).
MEDIA_REASONS = frozenset(
    {
        "not_found",
        "unauthorized",
        "forbidden",
        "timeout",
        "corrupt",
        "unsupported_format",
        "too_large",
        "forbidden_host",
        "bad_url",
        "error",
    }
)


class WorkerError(AssistantError):
    """Base class of the workers' errors (what / why / fix, picklable: see :class:`errors.AssistantError`)."""


class RequestError(WorkerError):
    """A task payload that does not validate against its contract (permanent)."""


class TransientError(WorkerError):
    """A failure that may go away on its own (a locked database, a restarting service)."""


class MediaError(WorkerError):
    """One image cannot be fetched or decoded.

    Args:
        what: What failed.
        reason: One of :data:`MEDIA_REASONS`.
        why: Why (optional).
        fix: The fix (optional).
    """

    def __init__(self, what: str, *, reason: str, why: str | None = None, fix: str | None = None) -> None:
        if reason not in MEDIA_REASONS:
            raise ValueError(f"unknown media failure reason {reason!r}; valid: {sorted(MEDIA_REASONS)}")
        self.reason = reason
        super().__init__(what, why=why, fix=fix)
