"""Settings of the agent (``ASSISTANT_AGENT_*``), on top of the backend's settings.

The agent talks to everything the backend and the CLI talk to (Label Studio, the queue, the
ledger, the registry), so :class:`AgentSettings` extends :class:`~backends.settings.BackendSettings`
and adds the policy's knobs and the loop's own. :meth:`AgentSettings.policy_config` turns them into
the pure :class:`~assistant.agent_policy.PolicyConfig`.

The agent's round trigger is its own (``ASSISTANT_AGENT_ROUND_THRESHOLD``, ``..._SCHEDULE``), not
the beat's: run the agent *or* the beat's automatic rounds for a project. Both may run (the round
lock keeps one round per project), but two triggers make the log harder to read.
"""

from __future__ import annotations

import functools
from typing import Self

from pydantic import Field, model_validator

from assistant.agent_policy import PolicyConfig
from backends.settings import BackendSettings
from state.settings import url_has_placeholder_password

__all__ = ["AgentSettings", "get_agent_settings"]


class AgentSettings(BackendSettings):
    """Configuration of ``assistant agent run`` (and of ``assistant agent log``)."""

    # --- which projects, how often -------------------------------------------------------------------
    # Projects the agent runs; empty: every Label Studio project whose config has an image-tagging
    # control (re-listed every agent_full_check_s). `--project` on the command line overrides it.
    agent_projects: list[int] = Field(default_factory=list)
    # Seconds between two looks at a project when no Label Studio event wakes the agent earlier.
    agent_interval_s: float = Field(default=30.0, gt=0)
    # A look whose cheap summary (task, annotation and prediction counts, config, model, ledger,
    # round log) is unchanged skips the full listing; a full one runs at least this often anyway.
    agent_full_check_s: float = Field(default=600.0, ge=0)

    # --- the policy (assistant.agent_policy.PolicyConfig) ---------------------------------------------
    # New corrections since the last round that call for a round; 0: never by count.
    agent_round_threshold: int = Field(default=50, ge=0)
    # A 5-field cron line (UTC) on which a round runs if there are agent_round_schedule_min_new
    # new corrections; empty: no schedule.
    agent_round_schedule: str = ""
    agent_round_schedule_min_new: int = Field(default=1, ge=1)
    # Seconds between the end of a round and the start of the next one, at least.
    agent_min_round_interval_s: float = Field(default=0.0, ge=0)
    # Select the next batch when fewer unlabeled tasks than this remain in the selected queue.
    agent_queue_low_water: int = Field(default=20, ge=0)
    # Tasks per selected batch, and the strategy that chooses them (assistant.selection).
    agent_batch_size: int = Field(default=100, ge=1)
    agent_strategy: str = "saving"
    # Re-order the queue after a promotion or a vocabulary change even when it is not low.
    agent_reselect_on_change: bool = True
    # Flag annotations whose label quality under the prediction the annotator saw is below this.
    agent_review_quality: float = Field(default=0.3, ge=0.0, le=1.0)
    agent_review_max: int = Field(default=100, ge=1)
    # ... but never more than this share of the rated annotations in all (the worst first).
    agent_review_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    # Budget: GPU minutes per UTC day for rounds (0: no limit), rounds per day (0: no limit), and a
    # round's GPU minutes before one was measured.
    agent_gpu_minutes_per_day: float = Field(default=0.0, ge=0)
    agent_max_rounds_per_day: int = Field(default=0, ge=0)
    agent_round_minutes_estimate: float = Field(default=30.0, gt=0)
    # A failed decision is tried again after this long, at most this many times in all.
    agent_max_attempts: int = Field(default=3, ge=1)
    agent_retry_after_s: float = Field(default=300.0, ge=0)

    # --- execution ---------------------------------------------------------------------------------------
    # The longest a prediction, selection or review job is followed before it counts as failed
    # (its queued work goes on; the next try queues only what is still missing).
    agent_action_timeout_s: float = Field(default=3600.0, gt=0)
    # The agent's per-project lock in Redis (one agent per project): it expires this long after
    # the agent's last heartbeat, so a killed agent's successor waits at most this long.
    agent_lock_ttl_s: float = Field(default=30.0, gt=0)

    def policy_config(self) -> PolicyConfig:
        """The policy's settings."""
        return PolicyConfig(
            round_threshold=self.agent_round_threshold,
            schedule_min_new=self.agent_round_schedule_min_new,
            min_round_interval_s=self.agent_min_round_interval_s,
            queue_low_water=self.agent_queue_low_water,
            batch_size=self.agent_batch_size,
            strategy=self.agent_strategy,
            reselect_on_change=self.agent_reselect_on_change,
            review_quality=self.agent_review_quality,
            review_max=self.agent_review_max,
            review_fraction=self.agent_review_fraction,
            gpu_minutes_per_day=self.agent_gpu_minutes_per_day,
            max_rounds_per_day=self.agent_max_rounds_per_day,
            round_minutes_estimate=self.agent_round_minutes_estimate,
            max_attempts=self.agent_max_attempts,
            retry_after_s=self.agent_retry_after_s,
        )

    @model_validator(mode="after")
    def _check_agent(self) -> Self:
        if self.agent_round_schedule.strip():
            from state.schedule import parse_cron  # celery's parser: the same rules as the beat

            parse_cron(self.agent_round_schedule)
        if self.environment != "development" and url_has_placeholder_password(self.agent_log_url):
            raise ValueError(
                "ASSISTANT_AGENT_LOG_URL carries a placeholder password while "
                f"ASSISTANT_ENVIRONMENT={self.environment}. "
                "Fix: generate one and use it both in the URL and in the database."
            )
        return self


@functools.cache
def get_agent_settings() -> AgentSettings:
    """The process-wide agent settings, read from the environment once."""
    return AgentSettings()
