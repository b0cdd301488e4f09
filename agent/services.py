"""What the agent talks to, built from :class:`~agent.settings.AgentSettings`; and its Redis pieces.

- :class:`AgentServices`: Label Studio, the registry, the ledger, the decision log, the queue
  (a Celery app that only sends), the backend's shared state (in-flight marks), the round locks;
- :class:`~state.locks.AgentLocks` (re-exported; its home is ``state.locks``, which the dashboard
  reads too): one agent per project (a Redis lock renewed by a heartbeat, as the round lock:
  ``<prefix>assistant:agent-lock:<project>``);
- :class:`EventInbox`: the Label Studio events the backend's ``/webhook`` forwards
  (``backends.webhook.AGENT_EVENTS_KEY``), so that the agent wakes up at once instead of at its
  next interval. Events are hints: the agent always looks at the project itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from agent.decision_log import DecisionLog, open_decision_log
from agent.settings import AgentSettings
from agent.studio import StudioReader
from backends.dispatch import CeleryDispatcher
from backends.state import RedisState
from backends.webhook import AGENT_EVENTS_KEY
from state.ledger import Ledger, open_ledger
from state.locks import NAMESPACE, AgentLocks, Heartbeat, RoundLocks, redis_url
from state.registry import Registry
from studio.client import LabelStudioClient
from workers.celery_app import make_celery

__all__ = ["AgentLocks", "AgentServices", "EventInbox", "LockKeeper", "build_services"]

logger = logging.getLogger(__name__)


class LockKeeper:
    """Holds the agent locks of the projects this process runs, each renewed by a heartbeat.

    Args:
        locks: The agent locks.
        ttl_s: A lock expires this long after its holder's last renewal (renewed every third).
    """

    def __init__(self, locks: AgentLocks, ttl_s: float) -> None:
        self.locks = locks
        self.ttl_s = ttl_s
        self._beats: dict[int, Heartbeat] = {}
        self._refused: set[int] = set()

    def claim(self, project: int, holder: str) -> bool:
        """Hold the project's lock (True), or give way to another agent that holds it (False)."""
        beat = self._beats.get(project)
        if beat is not None and not beat.lost:
            return True
        other = self.locks.claim(project, holder, self.ttl_s)
        if other is not None:
            if project not in self._refused:
                logger.warning("project %s: another agent (%s) runs it; this one gives way", project, other)
                self._refused.add(project)
            return False
        self._refused.discard(project)
        self._beats[project] = Heartbeat(self.locks, project, holder, self.ttl_s).start()
        logger.info("project %s: agent lock taken by %s", project, holder)
        return True

    def close(self) -> None:
        """Stop renewing and release every lock held."""
        for beat in self._beats.values():
            beat.stop()
        self._beats.clear()


class EventInbox:
    """Label Studio events forwarded by the backend (a Redis list; see ``backends.webhook``).

    Args:
        client: Redis (the backend's state database).
        prefix: ``Settings.redis_key_prefix``.
    """

    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client = client
        self.key = f"{prefix}{NAMESPACE}{AGENT_EVENTS_KEY}"

    def wait(self, timeout_s: float) -> list[tuple[str, int]]:
        """Block up to ``timeout_s`` for an event; then take every queued one. ``[(action, project)]``."""
        out: list[tuple[str, int]] = []
        try:
            first = self.client.blpop([self.key], timeout=max(1, int(round(timeout_s)))) if timeout_s > 0 else None
            raw: list[Any] = [first[1]] if first else []
            while len(raw) < 1000:
                more = self.client.lpop(self.key)
                if more is None:
                    break
                raw.append(more)
        except redis.RedisError as exc:
            # The events only wake the agent early; without Redis it falls back to its interval.
            logger.warning("cannot read Label Studio events from Redis (%s); polling instead", exc)
            time.sleep(max(0.0, timeout_s))
            return out
        for item in raw:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                doc = json.loads(item)
                out.append((str(doc["action"]), int(doc["project"])))
        return out


@dataclass
class AgentServices:
    """Everything the observer and the executor use (close with :meth:`close`)."""

    settings: AgentSettings
    client: LabelStudioClient
    reader: StudioReader
    registry: Registry
    ledger: Ledger
    log: DecisionLog
    state: RedisState
    app: Celery
    dispatcher: CeleryDispatcher
    locks: RoundLocks
    agent_locks: AgentLocks
    inbox: EventInbox
    owned: list[Any] = field(default_factory=list)

    def close(self) -> None:
        """Close what was opened here."""
        for resource in self.owned:
            with contextlib.suppress(Exception):
                resource.close()


def build_services(settings: AgentSettings, *, log: DecisionLog | None = None) -> AgentServices:
    """Open every service from the settings (no network until the first call)."""
    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())
    url = redis_url(settings.broker_url, settings.result_backend)
    # The agent is no request path: a few retries with backoff ride out a Redis restart.
    state = RedisState.from_url(
        url,
        settings.redis_key_prefix,
        timeout_s=5.0,
        retries=3,
        claim_ttl_s=settings.result_expires_s,
        inflight_ttl_s=settings.inflight_ttl_s,
    )
    app = make_celery(settings, include=())
    dispatcher = CeleryDispatcher(
        app,
        state,
        predict_queue=settings.predict_queue,
        publish_queue=settings.publish_queue,
        train_queue=settings.train_queue,
        round_lock_ttl_s=settings.round_queue_ttl_s,
    )
    ledger = open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
    owned: list[Any] = [ledger, state.client]
    if log is None:
        log = open_decision_log(
            settings.agent_log_url, home=settings.home, table_prefix=settings.agent_log_table_prefix
        )
        owned.append(log)
    # Blocking reads of the inbox need a socket timeout longer than the wait itself.
    events = redis.Redis.from_url(url, socket_timeout=settings.agent_interval_s + 10, socket_connect_timeout=5)
    owned.append(events)
    return AgentServices(
        settings=settings,
        client=client,
        reader=StudioReader(client),
        registry=Registry(settings.models_dir, settings.base_model),
        ledger=ledger,
        log=log,
        state=state,
        app=app,
        dispatcher=dispatcher,
        locks=RoundLocks(state.client, settings.redis_key_prefix),
        agent_locks=AgentLocks(state.client, settings.redis_key_prefix),
        inbox=EventInbox(events, settings.redis_key_prefix),
        owned=owned,
    )
