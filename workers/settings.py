"""Settings shared by the workers, the CLI and (through :mod:`backends.settings`) the backend.

This module and the other ``*/settings.py`` modules are the only places that read the
environment. Every variable has the prefix ``ASSISTANT_``; the Label Studio URL and key also
accept the names Label Studio's own tools use (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``).
Use :func:`get_settings` (cached) rather than building :class:`Settings` at import time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PROJECT_ROOT", "Settings", "get_settings"]

# The repository root: the bundled model (assets/), the prompt sets (prompts/) and the sample
# images (samples/) live here. The package is installed editable (`make install`) or copied
# whole into the container image, so the relative layout always holds.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Values that must never reach a deployment (docs/deploy.md).
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "secret", "password", "token"})


class Settings(BaseSettings):
    """Configuration common to every process of the assistant."""

    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_ignore_empty=True, extra="ignore", populate_by_name=True
    )

    # --- deployment -----------------------------------------------------------------------------
    # "development" allows placeholder secrets and local defaults; anything else refuses them.
    environment: Literal["development", "test", "production"] = "development"
    # Root of run-time state: the model registry, the feature cache, the ledger, reports.
    home: Path = PROJECT_ROOT / "var"

    # --- queue ------------------------------------------------------------------------------------
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Defaults to the broker (Redis serves both).
    result_backend: str | None = None

    # --- Label Studio -----------------------------------------------------------------------------
    label_studio_url: str = Field(
        default="http://127.0.0.1:8080",
        validation_alias=AliasChoices("ASSISTANT_LABEL_STUDIO_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"),
    )
    label_studio_api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices(
            "ASSISTANT_LABEL_STUDIO_API_KEY", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"
        ),
    )

    # --- model ------------------------------------------------------------------------------------
    # The base model every project starts from: a checkpoint directory, an open_clip spec such as
    # "ViT-B-16:laion2b_s34b_b88k", or "hf:/path/to/dir". Default: the offline world model.
    base_model: str = str(PROJECT_ROOT / "assets" / "world-tiny")
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    prompt_set: str = "scene"
    # "auto" picks CUDA when present.
    device: str = "auto"
    # 0 adapts the batch size to the device.
    batch_size: int = Field(default=0, ge=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def models_dir(self) -> Path:
        """The model registry's directory (versions and per-project ``current`` pointers)."""
        return self.home / "models"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def celery_result_backend(self) -> str:
        """The result backend actually used: :attr:`result_backend`, else the broker."""
        return self.result_backend or self.broker_url

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production":
            key = self.label_studio_api_key.get_secret_value().strip().lower()
            if key in PLACEHOLDER_SECRETS:
                raise ValueError(
                    "ASSISTANT_LABEL_STUDIO_API_KEY is empty or a placeholder while ASSISTANT_ENVIRONMENT=production. "
                    "Fix: set it to a Label Studio access token (Account & Settings > Access Token)."
                )
        return self


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
