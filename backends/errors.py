"""The error tree of the Label Studio edge.

It derives from the project's one error base, :class:`errors.AssistantError`. Each error carries
the HTTP status the app should answer with; the message is safe to send to Label Studio (no
traceback, no credentials)::

    BackendError                 status 400 unless told otherwise
    ├── TaskDataError            one task's data cannot be turned into an image reference (422)
    └── WorkerResultError        a worker's answer does not match the request it got (502)

The labeling config's and Label Studio's own errors are :mod:`studio.errors`.

Example:
    >>> err = TaskDataError("task 3 has no image in its data", fix="import tasks with an image URL")
    >>> err.status_code, str(err)
    (422, 'Task 3 has no image in its data. Fix: Import tasks with an image URL.')
"""

from __future__ import annotations

from errors import AssistantError

__all__ = ["BackendError", "TaskDataError", "WorkerResultError"]


class BackendError(AssistantError):
    """Base class of every error the backend reports to Label Studio or the CLI.

    Args:
        what: What failed, in one sentence.
        why: Why it failed (optional).
        fix: What the user should do about it, ideally with an example (optional).
        status_code: The HTTP status to answer with; the class default when None.
    """

    #: HTTP status for this kind of error (subclasses override it).
    default_status: int = 400

    def __init__(
        self, what: str, *, why: str | None = None, fix: str | None = None, status_code: int | None = None
    ) -> None:
        self.status_code = self.default_status if status_code is None else status_code
        super().__init__(what, why=why, fix=fix)


class TaskDataError(BackendError):
    """One task's data has no usable image reference (missing key, not a string).

    Args:
        what: What failed.
        task_id: The Label Studio task id, when known.
        reason: Machine-readable: ``missing_data`` (no such key) or ``bad_data`` (unusable value).
        why: Why it failed.
        fix: What to do about it.
    """

    default_status = 422

    def __init__(
        self,
        what: str,
        *,
        task_id: int | None = None,
        reason: str = "bad_data",
        why: str | None = None,
        fix: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.task_id = task_id
        self.reason = reason
        super().__init__(what, why=why, fix=fix, status_code=status_code)


class WorkerResultError(BackendError):
    """A worker answered with a result that does not fit the request (labels, images).

    It is our fault, not the user's: typically a worker running an older contract.
    """

    default_status = 502
