"""The one error base of the labeling assistant: what failed, why, and the fix.

Every error a user can cause derives from :class:`AssistantError`, whichever package raises it,
so that the CLI, the workers and the HTTP backend render them all the same way and one boundary
(``cli.boundary``) turns any of them into a message and an exit code::

    AssistantError                    this module: what / why / fix, picklable
    ├── assistant.errors.*            the model core (ConfigError, CheckpointError, DataError, ...)
    ├── workers.errors.WorkerError    the Celery workers (RequestError, TransientError, MediaError, ...)
    ├── backends.errors.BackendError  the Label Studio edge (carries an HTTP status)
    ├── studio.errors.StudioError     a labeling config the model cannot use, a failing Label Studio
    ├── state.registry.RegistryError  an unknown model version or project, an unreadable registry
    ├── state.ledger.LedgerError      the corrections and effort ledger
    ├── state.decision_log.DecisionLogError  the agent's decision log
    └── preannotation.costs.PreannotationError

A leaf on purpose: it imports nothing of the project (an import contract says so), so the pure
core, the light state and the web process may all derive from it.

Example:
    >>> err = AssistantError("no <Image> object in the labeling config", fix="add <Image name=... />")
    >>> str(err)
    'No <Image> object in the labeling config. Fix: Add <Image name=... />.'
"""

from __future__ import annotations

from typing import Any

__all__ = ["AssistantError"]


class AssistantError(Exception):
    """Base class of every user-facing error.

    Subclasses may take more keyword arguments (an HTTP status, a machine-readable reason) and
    keep them as attributes; pickling carries every attribute along (billiard sends exceptions from
    prefork children to the parent by pickle, Celery's result backend stores them the same way).

    Args:
        what: What failed, in one sentence.
        why: Why it failed (optional).
        fix: What the user should do about it, ideally with an example (optional).
    """

    def __init__(self, what: str, *, why: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.why = why
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The full message: what, then why, then the fix, as sentences."""
        parts = [_sentence(self.what)]
        if self.why:
            parts.append(_sentence(self.why))
        if self.fix:
            parts.append("Fix: " + _sentence(self.fix))
        return " ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling (which calls cls(*args)).
        return (_rebuild, (type(self), self.what, self.why, self.fix, dict(self.__dict__)))


def _rebuild(
    cls: type[AssistantError], what: str, why: str | None, fix: str | None, state: dict[str, Any]
) -> AssistantError:
    # Bypass the subclass's __init__: its extra arguments are in ``state`` already.
    err = cls.__new__(cls)
    AssistantError.__init__(err, what, why=why, fix=fix)
    err.__dict__.update(state)
    return err


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "."
