"""The workers' exception tree (stdlib only, so the light modules and the backend may import it).

Errors keep the what/why/fix shape of :class:`assistant.errors.AssistantError` without importing
``assistant`` (which would pull torch into the HTTP backend)::

    WorkerError              base: what failed, why, and the fix
    ├── RegistryError        an unknown version or project, a corrupt registry file
    ├── RequestError         a task payload that does not validate (permanent: never retried)
    ├── TransientError       worth retrying later (the tasks' ``autoretry_for``)
    └── MediaError           one image cannot be fetched or decoded; carries a machine ``reason``
                             and becomes an ``ImageFailure`` in the result, never a failed batch
"""

from __future__ import annotations

__all__ = [
    "MEDIA_REASONS",
    "MediaError",
    "RegistryError",
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


class WorkerError(Exception):
    """Base class of the workers' errors.

    Args:
        what: What failed, in one sentence.
        why: Why it failed (optional).
        fix: What to do about it (optional).
    """

    def __init__(self, what: str, *, why: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.why = why
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """What, then why, then the fix, as sentences."""
        parts = [_sentence(self.what)]
        if self.why:
            parts.append(_sentence(self.why))
        if self.fix:
            parts.append("Fix: " + _sentence(self.fix))
        return " ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling (billiard sends exceptions
        # from prefork children to the parent by pickle).
        return (_rebuild, (type(self), self.what, self.why, self.fix, dict(self.__dict__)))


def _rebuild(cls: type[WorkerError], what: str, why: str | None, fix: str | None, state: dict[str, object]) -> object:
    err = cls.__new__(cls)
    WorkerError.__init__(err, what, why=why, fix=fix)
    err.__dict__.update(state)
    return err


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "."


class RegistryError(WorkerError):
    """An unknown version or project, or an unreadable registry file."""


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
