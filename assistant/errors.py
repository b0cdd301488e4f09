"""The one exception tree of the labeling assistant.

Every error a user can cause derives from :class:`AssistantError` and says what failed, why,
and how to fix it (``what``, ``why`` and ``fix`` are kept as attributes so that the CLI, the
workers and the HTTP backend can render them in their own way)::

    AssistantError
    ├── ConfigError          a setting, config file or argument is invalid
    ├── ModelLoadError       weights or an architecture cannot be loaded
    ├── CheckpointError      a checkpoint is missing, corrupt or does not match its sidecar
    ├── DataError            input data (images, arrays, manifests) is unusable
    └── LabelMappingError    labels or a labeling config cannot be mapped to a vocabulary

The light edges (``workers.contracts``/``workers.registry`` and ``backends``) may not import
``assistant`` (it would pull in torch), so they keep small trees of the same what/why/fix shape
in their own ``errors`` modules.
"""

from __future__ import annotations

__all__ = [
    "AssistantError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LabelMappingError",
    "ModelLoadError",
]


class AssistantError(Exception):
    """Base class of every user-facing error.

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
        """The full message: what, then why, then the fix."""
        parts = [_sentence(self.what)]
        if self.why:
            parts.append(_sentence(self.why))
        if self.fix:
            parts.append("Fix: " + _sentence(self.fix))
        return " ".join(parts)


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "."


class ConfigError(AssistantError):
    """A setting, config file or argument is invalid."""


class ModelLoadError(AssistantError):
    """Weights or an architecture cannot be loaded (never replaced by a silently random model)."""


class CheckpointError(AssistantError):
    """A checkpoint is missing, corrupt, or does not match its sidecar."""


class DataError(AssistantError):
    """Input data (images, arrays, manifests) is unusable."""


class LabelMappingError(AssistantError):
    """Labels or a labeling config cannot be mapped to a vocabulary."""
