"""The errors of the Label Studio package: a config the model cannot use, a Label Studio that fails.

They derive from the project's one error base, :class:`errors.AssistantError` (what / why / fix,
picklable across Celery: a round in a worker raises them as well as the HTTP backend). Each
carries the HTTP status the backend answers with, so ``/setup`` turns a bad config into a 422
Label Studio shows::

    StudioError                  status 400 unless the class says otherwise
    ├── LabelConfigError         the labeling config has no usable image-tagging control (422)
    ├── LabelStudioError         Label Studio refused a request: a wrong token, a deleted task (502)
    └── LabelStudioUnavailable   Label Studio did not answer, or answered 429/5xx: retry later (503)

Example:
    >>> err = LabelConfigError("no <Image> object in the labeling config", fix="add <Image name=... />")
    >>> err.status_code, str(err)
    (422, 'No <Image> object in the labeling config. Fix: Add <Image name=... />.')
"""

from __future__ import annotations

from errors import AssistantError

__all__ = ["LabelConfigError", "LabelStudioError", "LabelStudioUnavailable", "StudioError"]


class StudioError(AssistantError):
    """Base class of the Label Studio package's errors."""

    #: The HTTP status the backend answers with for this kind of error.
    default_status: int = 400

    @property
    def status_code(self) -> int:
        """The HTTP status for this error (the class's :attr:`default_status`)."""
        return self.default_status


class LabelConfigError(StudioError):
    """The labeling config cannot be mapped to a vocabulary (broken XML, no image, no tag control,
    a value the model cannot use).

    ``/setup`` answers with it, so Label Studio shows the message when the backend is connected,
    and a round refuses the config with the same message.
    """

    default_status = 422


class LabelStudioError(StudioError):
    """Label Studio answered a request with an error that retrying will not fix.

    Args:
        what: What failed.
        status: Label Studio's HTTP status (0 when there was none).
        why: Why (Label Studio's answer, shortened).
        fix: What to do about it.
    """

    default_status = 502

    def __init__(self, what: str, *, status: int = 0, why: str | None = None, fix: str | None = None) -> None:
        self.status = status
        super().__init__(what, why=why, fix=fix)


class LabelStudioUnavailable(StudioError):
    """Label Studio did not answer, or answered 429/5xx: worth retrying later."""

    default_status = 503
