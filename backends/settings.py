"""Settings of the Label Studio ML backend (``ASSISTANT_*``), on top of the shared :class:`Settings`.

The shared part (broker, Label Studio URL and key, home, base model, Redis key prefix) comes from
:mod:`state.settings`, so the backend, the workers and the CLI agree on the queue and the model
registry. Everything here is specific to the HTTP edge: where it listens, how long ``/predict`` may
wait, auth, limits, and the corrections ledger.
"""

from __future__ import annotations

import functools
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from state.contracts import MAX_IMAGES, QUEUE_PREDICT, QUEUE_TRAIN
from state.settings import PLACEHOLDER_SECRETS, Settings

__all__ = ["BackendSettings", "get_backend_settings"]


class BackendSettings(Settings):
    """Configuration of ``assistant serve`` and of the background publishing task."""

    # --- HTTP ---------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=1, le=65535)
    # Largest request body accepted (413 beyond it). A /predict of 1,000 tasks with Label Studio's
    # full task serialisation is ~1.5 MB and a 10,000-label config ~0.5 MB; 32 MB leaves ample room.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    # --- /predict ------------------------------------------------------------------------------------
    # Seconds /predict waits for the workers before finishing the rest in the background. Label
    # Studio gives /predict 100 s and proxies/browsers often give up near 90 s, so 60 s leaves a
    # 30 s margin for queueing, conversion and the transfer.
    predict_inline_budget_s: float = Field(default=60.0, ge=0.0, le=90.0)
    # Selections larger than this are not waited for at all: they go to the background at once
    # and /predict answers immediately (a 5,000-task "Retrieve Predictions" must not hang the UI).
    predict_inline_max_tasks: int = Field(default=256, ge=0)
    # Images per worker message (chunk). Chunks run in parallel on as many workers as there are;
    # 32 images take ~2.5 s on a 2-core CPU with ViT-B-32, so a small request finishes fast and a
    # large one spreads over workers.
    predict_chunk_size: int = Field(default=32, ge=1, le=MAX_IMAGES)
    # Blocking /predict waits run in at most this many threads, so that /setup and /webhook (sync
    # routes on the default 40-thread pool) always find a free thread.
    predict_concurrency: int = Field(default=8, ge=1, le=32)
    # Seconds between polls of the chunks' results while /predict waits.
    predict_poll_interval_s: float = Field(default=0.05, gt=0.0, le=5.0)
    # How long a task stays marked "in flight" after it was queued: a second request for it in
    # that window is not re-queued (the first job will publish it). Longer than the predict hard
    # time limit plus queueing.
    inflight_ttl_s: int = Field(default=3600, ge=1)
    # Seconds /predict (at most every few seconds) and /health's background refresh wait for the
    # workers to say which queues they consume (backends.presence). Workers on the same Redis
    # answer in milliseconds; with none, this is how long /predict takes to say so.
    worker_probe_timeout_s: float = Field(default=0.5, gt=0.0, le=5.0)
    # Queues: the GPU predict task, the light publish task (any predict worker runs it), rounds.
    predict_queue: str = QUEUE_PREDICT
    publish_queue: str = QUEUE_PREDICT
    train_queue: str = QUEUE_TRAIN

    # --- corrections ledger --------------------------------------------------------------------------
    # None: SQLite at <home>/ledger.sqlite3. Else sqlite:////abs/path.db or postgresql://...
    ledger_url: str | None = None
    ledger_table_prefix: str = "assistant_"

    # --- the agent's decision log (the agent writes it; the dashboard at /ui reads it) ---------------
    # None: SQLite at <home>/agent.sqlite3; else sqlite:////abs/path.db or postgresql://...
    agent_log_url: str | None = None
    agent_log_table_prefix: str = "assistant_"

    # --- auth ----------------------------------------------------------------------------------------
    # HTTP Basic auth on every route but /health (and /webhook, see webhook_token), enabled when
    # both are set. Label Studio sends them when the backend is connected with "Basic auth".
    basic_auth_user: str | None = None
    basic_auth_password: SecretStr | None = None
    # Shared secret of /webhook, sent by Label Studio's webhook as the header X-Assistant-Token or
    # as ?token= in the webhook URL (LS's auto-created webhook carries no Basic credentials).
    # /webhook also accepts valid Basic credentials (START_TRAINING comes with them).
    webhook_token: SecretStr | None = None

    # --- misc ----------------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Seconds of the Redis calls on the request path (/setup records the served version; a slow
    # Redis must not push /setup past Label Studio's 3 s).
    redis_timeout_s: float = Field(default=0.5, gt=0.0)
    # The lifetime of a queued round's lock, until a train worker takes the round up and keeps
    # the lock alive by its heartbeat (state.locks; ASSISTANT_ROUND_LOCK_HEARTBEAT_S).
    round_lock_ttl_s: int = Field(default=6 * 3600, ge=60)

    @property
    def basic_auth_enabled(self) -> bool:
        """Whether HTTP Basic auth is configured."""
        return bool(self.basic_auth_user) and self.basic_auth_password is not None

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if bool(self.basic_auth_user) != (self.basic_auth_password is not None):
            raise ValueError(
                "ASSISTANT_BASIC_AUTH_USER and ASSISTANT_BASIC_AUTH_PASSWORD must be set together. "
                "Fix: set both (and the same pair in Label Studio's model settings), or neither."
            )
        if self.environment != "development":
            for name, secret in (
                ("BASIC_AUTH_PASSWORD", self.basic_auth_password),
                ("WEBHOOK_TOKEN", self.webhook_token),
            ):
                if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(
                        f"ASSISTANT_{name} is a placeholder while ASSISTANT_ENVIRONMENT={self.environment}. "
                        "Fix: generate one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
                    )
        return self


@functools.cache
def get_backend_settings() -> BackendSettings:
    """The process-wide backend settings, read from the environment once."""
    return BackendSettings()
