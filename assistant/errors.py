"""The model core's errors, under the project's one error base :class:`errors.AssistantError`.

Each says what failed, why, and how to fix it (``what``, ``why`` and ``fix`` are kept as
attributes so that the CLI, the workers and the HTTP backend can render them in their own way)::

    AssistantError
    ├── ConfigError          a setting, config file or argument is invalid
    ├── ModelLoadError       weights or an architecture cannot be loaded
    ├── CheckpointError      a checkpoint is missing, corrupt or does not match its sidecar
    ├── DataError            input data (images, arrays, manifests) is unusable
    └── LabelMappingError    labels or a labeling config cannot be mapped to a vocabulary

The light packages (``state``, ``backends``) may not import ``assistant`` (it would pull in
torch); their trees derive from the same base in :mod:`errors`.
"""

from __future__ import annotations

from errors import AssistantError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LabelMappingError",
    "ModelLoadError",
]


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
