"""Settings shared by the workers, the CLI and (through :mod:`backends.settings`) the backend.

This module and the other ``*/settings.py`` modules are the only places that read the
environment. Every variable has the prefix ``ASSISTANT_``; the Label Studio URL and key also
accept the names Label Studio's own tools use (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``).
Use :func:`get_settings` (cached) rather than building :class:`Settings` at import time.

**The env file.** Every settings class (they all derive from :class:`Settings`) also reads an env
file: ``ASSISTANT_ENV_FILE`` when set, else ``.env`` in the working directory when there is one.
Variables of the process's environment win over the file's. So ``assistant status`` in a second
shell sees the same home, broker and Label Studio as the stack started from the same directory,
and the ``.env`` that ``docker compose`` reads next to ``compose.yaml`` serves the processes run
outside Docker too. ``ASSISTANT_ENV_FILE=/dev/null`` reads none (the tests' choice).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, computed_field, model_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from preannotation import REFIT_EVERY, EditCosts, PreannotationError

__all__ = [
    "BUNDLED_MODEL_DIR",
    "ENV_FILE_VARIABLE",
    "PLACEHOLDER_SECRETS",
    "PROJECT_ROOT",
    "Settings",
    "env_file_path",
    "get_settings",
    "url_has_placeholder_password",
]

# The repository root: the bundled model (assets/), the prompt sets (prompts/) and the sample
# images (samples/) live here. The package is installed editable (`make install`) or copied
# whole into the container image, so the relative layout always holds.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The bundled offline model (the default base model), built by `assistant world pretrain`.
BUNDLED_MODEL_DIR = PROJECT_ROOT / "assets" / "world-tiny"

# Values that must never reach a deployment (docs/deploy.md).
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "secret", "password", "token"})
# Names the env file every settings class reads (module docstring).
ENV_FILE_VARIABLE = "ASSISTANT_ENV_FILE"
_DEFAULT_ENV_FILE = ".env"


def env_file_path() -> Path | None:
    """The env file the settings read: ``ASSISTANT_ENV_FILE``, else ``./.env`` if present, else None.

    Raises:
        ValueError: ``ASSISTANT_ENV_FILE`` names a file that does not exist.
    """
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.exists():
            raise ValueError(
                f"{ENV_FILE_VARIABLE}={named} does not exist. "
                f"Fix: point it at your env file, or unset it to read ./{_DEFAULT_ENV_FILE} (/dev/null reads none)."
            )
        return path.absolute()
    default = Path(_DEFAULT_ENV_FILE)
    return default.absolute() if default.is_file() else None


class Settings(BaseSettings):
    """Configuration common to every process of the assistant."""

    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_ignore_empty=True, extra="ignore", populate_by_name=True
    )
    # The env file these settings were read from (None: none); see :attr:`env_file`.
    _env_file_read: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the env file (:func:`env_file_path`), then secrets."""
        del dotenv_settings  # the class-level env_file is fixed at import; ours is chosen per instance
        path = env_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(DotEnvSettingsSource(settings_cls, env_file=path))
        return (*sources, file_secret_settings)

    def model_post_init(self, context: Any, /) -> None:
        """Remember which env file was read (status and doctor print it)."""
        super().model_post_init(context)
        self._env_file_read = env_file_path()

    @property
    def env_file(self) -> Path | None:
        """The env file these settings were read from, or None."""
        return self._env_file_read

    # --- deployment -----------------------------------------------------------------------------
    # "development" allows placeholder secrets and local defaults; anything else refuses them.
    environment: Literal["development", "test", "production"] = "development"
    # Root of run-time state: the model registry, the feature cache, the ledger, reports.
    home: Path = PROJECT_ROOT / "var"

    # --- observability (docs/observability.md) -----------------------------------------------------
    # "json": one JSON object per log line, with request and task ids (the compose stack's choice);
    # "text": human-readable lines.
    log_format: Literal["text", "json"] = "text"
    # Port of a worker's Prometheus exporter (one per `assistant worker`, covering all its pool
    # processes); 0 serves none. The compose stack uses 9808 (the port usually given to Celery
    # exporters); two workers on one host need two ports.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # Address the exporter binds: loopback by default, 0.0.0.0 in a container.
    worker_metrics_host: str = "127.0.0.1"

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
    base_model: str = str(BUNDLED_MODEL_DIR)
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    prompt_set: str = "scene"
    # "auto" picks CUDA when present.
    device: str = "auto"
    # 0 adapts the batch size to the device.
    batch_size: int = Field(default=0, ge=0)

    # --- workers: Celery ---------------------------------------------------------------------------
    # Seconds a task result stays in Redis: long enough for a bulk pre-annotation run to collect
    # it, short enough that abandoned results do not pile up (one day).
    result_expires_s: int = Field(default=86_400, ge=60)
    # Time limits of the GPU tasks on the `predict` queue (predict, embed, score_pool). A full
    # message (1,024 images) takes ~80 s on a 2-core CPU with ViT-B-32 and ~5 s on a GPU; the soft
    # limit raises inside the task so it can fail cleanly, the hard one kills the process.
    predict_soft_time_limit_s: int = Field(default=900, ge=1)
    predict_time_limit_s: int = Field(default=960, ge=1)
    # Time limits of a fine-tuning round on the `train` queue.
    train_soft_time_limit_s: int = Field(default=4 * 3600, ge=1)
    train_time_limit_s: int = Field(default=4 * 3600 + 300, ge=1)
    # Seconds before Redis redelivers a message whose worker died without acknowledging it.
    # None: the longest hard time limit plus 10 minutes, so a task still running is never
    # delivered twice. The price: a SIGKILLed worker's message waits that long (see docs/workers.md).
    visibility_timeout_s: int | None = Field(default=None, ge=1)
    # Prefix of every Redis key of the broker and the result backend: several deployments (or
    # test sessions) can then share one Redis database without seeing each other's queues.
    redis_key_prefix: str = ""
    # Extra kombu Redis transport options, merged over the defaults (e.g.
    # {"unacked_restore_interval": 1, "unacked_restore_throttle": 1} for fast redelivery in tests).
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    # Loaded model versions kept per worker process (projects may sit on different versions);
    # a ViT-B model takes ~0.6 GB, so 2 fits any GPU we deploy on.
    model_cache_size: int = Field(default=2, ge=1)
    # torch intra-op threads per worker process; 0 keeps torch's default (one per core). Set it
    # to cores / concurrency with the prefork pool so processes do not oversubscribe the CPU.
    torch_threads: int = Field(default=0, ge=0)

    # --- workers: media download -------------------------------------------------------------------
    # Image hosts besides Label Studio's origin (always allowed): exact names, IP addresses or
    # "*.example.com" wildcards, e.g. an internal MinIO, a CDN, or the cloud storage Label
    # Studio's presign endpoint redirects to ("*.s3.amazonaws.com", "storage.googleapis.com").
    # Every other host is refused as `forbidden_host`, redirects included (no server-side request
    # forgery). A name listed here may resolve to a private address, never to a link-local one
    # (cloud metadata at 169.254.169.254) unless that address itself is listed.
    media_allowed_hosts: list[str] = Field(default_factory=list)
    # Opt-in: also fetch from any other host whose every address is public (loopback, private,
    # link-local and reserved addresses stay refused). Off: a task's image URL would otherwise
    # make the workers fetch from any host on the internet.
    media_allow_public_hosts: bool = False
    # Folders plain local paths may be read from (the CLI and tests); empty refuses every path.
    media_local_roots: list[Path] = Field(default_factory=list)
    # Label Studio's LOCAL_FILES_DOCUMENT_ROOT when mounted here: /data/local-files/?d=... is then
    # read from disk instead of downloaded through Label Studio.
    label_studio_local_files_root: Path | None = None
    # Label Studio's media directory (the one holding upload/) when mounted here.
    label_studio_media_root: Path | None = None
    # Largest response accepted (bytes) and largest decoded image (pixels): a 100-megapixel
    # photo decodes to 300 MB of RGB; anything bigger is refused as `too_large`.
    media_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    media_max_pixels: int = Field(default=100_000_000, ge=1)
    # Per-image timeouts (seconds): to connect, between two reads, and for the whole download.
    media_connect_timeout_s: float = Field(default=5.0, gt=0)
    media_read_timeout_s: float = Field(default=30.0, gt=0)
    media_total_timeout_s: float = Field(default=60.0, gt=0)
    # Retries of transient failures (5xx, 429, connection errors, timeouts), with exponential
    # backoff starting at media_retry_backoff_s.
    media_retries: int = Field(default=2, ge=0)
    media_retry_backoff_s: float = Field(default=0.5, ge=0)
    # Concurrent downloads per worker process (they overlap with model compute).
    media_concurrency: int = Field(default=8, ge=1)
    # Verify TLS certificates; switch off only for a Label Studio with a self-signed certificate.
    media_verify_ssl: bool = True
    # How long (seconds) a downloaded URL is assumed to keep its content, so that re-tagging skips
    # the download and goes straight to the feature cache. Label Studio uploads are immutable and
    # local files are checked by size and mtime whatever this says; 0 always downloads.
    media_source_ttl_s: int = Field(default=86_400, ge=0)

    # --- workers: feature cache --------------------------------------------------------------------
    # Disk budget of the image-feature cache; least recently used entries go first. A ViT-B/32
    # image takes 51 KB (50 tokens x 512 x float16), so 8 GiB holds ~160,000 images.
    feature_cache_max_bytes: int = Field(default=8 * 1024**3, ge=0)

    # --- fine-tuning rounds (docs/rounds.md) ----------------------------------------------------------
    # The corrections ledger the rounds read (the backend writes it): None is SQLite at
    # <home>/ledger.sqlite3; else sqlite:////abs/path.db or postgresql://... (same as the backend's).
    ledger_url: str | None = None
    ledger_table_prefix: str = "assistant_"
    # New corrections (ledger rows since the project's last round) that queue a round
    # automatically; 0 never does. Checked by the beat every round_check_interval_s (0: no check).
    round_threshold: int = Field(default=50, ge=0)
    round_check_interval_s: int = Field(default=60, ge=0)
    # Scheduled rounds, as a 5-field cron line "minute hour day-of-month month day-of-week" in UTC
    # (e.g. "0 3 * * *": every night at 03:00), for every project with at least
    # round_schedule_min_new new corrections; empty: no scheduled rounds.
    round_schedule: str = ""
    round_schedule_min_new: int = Field(default=1, ge=0)
    # A running round's lock expires this long after its holder's last heartbeat (renewed every
    # third of it): a killed round blocks the next one for at most this long.
    round_lock_heartbeat_s: float = Field(default=60.0, gt=0)
    # How long a queued round's lock lasts before a train worker takes it up (the backend's
    # START_TRAINING uses its own round_lock_ttl_s for the same purpose).
    round_queue_ttl_s: int = Field(default=6 * 3600, ge=60)
    # What a round trains: "stage1" (image side) and/or "stage2" (prompt tuning), and for how long.
    round_stages: list[Literal["stage1", "stage2"]] = Field(default_factory=lambda: ["stage1", "stage2"])  # type: ignore[arg-type]
    round_stage1_epochs: int = Field(default=8, ge=1)
    round_stage2_epochs: int = Field(default=4, ge=1)
    round_batch_size: int = Field(default=32, ge=1)
    round_lr: float = Field(default=1e-3, gt=0)
    round_distill_weight: float = Field(default=0.3, ge=0)
    # Optimiser steps per stage at most (0: no cap): a time budget for CPU deployments and tests.
    round_max_steps: int = Field(default=0, ge=0)
    # Held-out mAP points a candidate may lose and still be promoted.
    round_tolerance: float = Field(default=0.5, ge=0)
    # How much more of the from-scratch work (edits_vs_scratch) a candidate's pre-annotations may
    # cost on the held-out split and still be promoted (0: never more than the model in service).
    round_edits_tolerance: float = Field(default=0.0, ge=0)
    # Shares of annotated tasks held out for evaluation and used for epoch selection (fixed per
    # task by a hash: never change them on a live project, or images move between sides).
    round_heldout_fraction: float = Field(default=0.2, gt=0, lt=1)
    round_val_fraction: float = Field(default=0.1, ge=0, lt=1)
    # A label the model in service has not trained on joins training with this many positives
    # and negatives among the training annotations.
    round_min_label_positives: int = Field(default=5, ge=1)
    round_min_label_negatives: int = Field(default=5, ge=1)
    # Fewer usable training / held-out images skip the round (nothing is trained).
    round_min_train_images: int = Field(default=16, ge=1)
    round_min_heldout_images: int = Field(default=10, ge=1)

    # --- pre-annotation (docs/preannotation.md) ----------------------------------------------------
    # What an annotator's edit costs: a tag is shown when its probability reaches
    # remove / (add + remove), the break-even point (equal costs: 0.5). Only the ratio decides.
    edit_cost_add: float = Field(default=1.0, gt=0)
    edit_cost_remove: float = Field(default=1.0, gt=0)
    # Per-project costs over those, as JSON: {"3": {"add": 2, "remove": 1}}. A control's
    # model_cost_add / model_cost_remove in the labeling config overrides both.
    project_edit_costs: dict[int, dict[str, float]] = Field(default_factory=dict)
    # A project's calibration is refit from its own annotations every this many newly counted
    # annotations of the model version in service (0: never); the default is the simulations' too
    # (preannotation.REFIT_EVERY). 25 annotations of ~10 scored tags each are ~250 (probability,
    # answer) pairs; the refit stays near the model's own calibration until answers outweigh
    # recalibration_prior_answers.
    recalibration_every: int = Field(default=REFIT_EVERY, ge=0)
    recalibration_prior_answers: float = Field(default=30.0, gt=0)
    # The newest pairs a refit reads: a long-running project's older answers say less about today.
    recalibration_max_pairs: int = Field(default=50_000, ge=100)
    # The per-tag guard: a tag whose showings annotators remove more often than the break-even
    # allows (the Wilson interval of its keep rate, at guard_confidence, wholly below it) after at
    # least guard_min_shown showings stops being shown in that project.
    guard_enabled: bool = True
    guard_min_shown: int = Field(default=20, ge=1)
    guard_confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    # A model whose calibration was never measured (the "default" prior, e.g. a hub model) serves
    # few, confident tags until the project's first refit: at most this many, from this probability.
    conservative_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    conservative_max_tags: int = Field(default=3, ge=1)
    # Seconds between the beat's passes over every project's uncounted annotations (a safety net:
    # the webhook asks for a pass at once); 0: none.
    effort_check_interval_s: int = Field(default=60, ge=0)

    def edit_costs(self, project: int | None) -> EditCosts:
        """The project's edit costs: its entry of :attr:`project_edit_costs`, else the defaults."""
        base = EditCosts(self.edit_cost_add, self.edit_cost_remove)
        override = self.project_edit_costs.get(project) if project is not None else None
        return EditCosts.from_mapping(override, default=base) if override else base

    @model_validator(mode="after")
    def _check_project_costs(self) -> Settings:
        for project, costs in self.project_edit_costs.items():
            try:
                EditCosts.from_mapping(costs)
            except PreannotationError as exc:
                raise ValueError(
                    f"ASSISTANT_PROJECT_EDIT_COSTS for project {project} has an {exc.what}: each cost is a "
                    'positive number (their ratio sets the break-even). Fix: use e.g. {"3": {"add": 2, "remove": 1}}'
                ) from None
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def feature_cache_dir(self) -> Path:
        """The image-feature cache's directory."""
        return self.home / "feature-cache"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broker_visibility_timeout_s(self) -> int:
        """The visibility timeout actually used (see :attr:`visibility_timeout_s`)."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return max(self.predict_time_limit_s, self.train_time_limit_s) + 600

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
        # Outside development every process talks to a real Label Studio and real databases, so
        # an empty key or a "changeme" left over from an example file is refused at start-up
        # rather than discovered as a 401 on the first image download.
        if self.environment == "development":
            return self
        key = self.label_studio_api_key.get_secret_value().strip().lower()
        if key in PLACEHOLDER_SECRETS:
            raise ValueError(
                "ASSISTANT_LABEL_STUDIO_API_KEY is empty or a placeholder while "
                f"ASSISTANT_ENVIRONMENT={self.environment}. "
                "Fix: set it to a Label Studio access token (Account & Settings > Access Token)."
            )
        for name, url in (
            ("BROKER_URL", self.broker_url),
            ("RESULT_BACKEND", self.result_backend),
            ("LEDGER_URL", self.ledger_url),
        ):
            if url_has_placeholder_password(url):
                raise ValueError(
                    f"ASSISTANT_{name} carries a placeholder password while ASSISTANT_ENVIRONMENT={self.environment}. "
                    "Fix: generate one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`, "
                    "and use it both in the URL and in the server's configuration."
                )
        return self


def url_has_placeholder_password(url: str | None) -> bool:
    """Whether a URL such as ``redis://:changeme@redis:6379/0`` carries a placeholder password.

    A URL without a password is not a placeholder (a Redis on a private network may have none).
    """
    if not url:
        return False
    try:
        password = urlsplit(url).password
    except ValueError:  # a malformed port; the URL's own consumer reports that better
        return False
    return password is not None and unquote(password).strip().lower() in PLACEHOLDER_SECRETS


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
