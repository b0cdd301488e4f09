"""The per-project round lock in Redis: at most one fine-tuning round queued or running per project.

Light on purpose (redis only): the HTTP backend takes it when START_TRAINING queues a round, the
beat check when a threshold or the schedule does, the worker and the CLI when a round runs.

One key per project, holding the holder's id (a Celery task id, or ``cli:<host>:<pid>:<uuid>``)::

    <prefix>assistant:round-lock:<project>

Life of a lock:

- **queued**: whoever queues a round takes the lock for its Celery task id with a long TTL
  (``round_queue_ttl_s``): nothing can renew it while the message waits in the broker;
- **running**: the task that runs the round *claims* it (takes it if free, or re-takes it if it
  already holds its own id) with a short TTL, and a :class:`Heartbeat` thread renews it every
  third of that TTL while the round runs. When the holder dies (SIGKILL, OOM, a lost machine),
  the renewals stop and the lock expires within one TTL: the next round can start;
- **released** at the end of the round, only by its holder (compare-and-delete in Lua).

Every change is a single Lua script or ``SET NX``, so two processes can never both believe they
hold the lock. A holder that loses it (expired while Redis was unreachable for a whole TTL, then
taken by another round) is told so by :attr:`Heartbeat.lost`, and must not promote its result.

Example:
    >>> locks = RoundLocks.from_url("redis://127.0.0.1:6379/0", prefix="")     # doctest: +SKIP
    >>> if locks.claim(3, "cli:host:42:ab", ttl_s=60) is None:                 # doctest: +SKIP
    ...     with Heartbeat(locks, 3, "cli:host:42:ab", ttl_s=60) as beat:
    ...         run_the_round(); assert not beat.lost
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any, Final

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from errors import AssistantError

__all__ = [
    "CLAIM_LUA",
    "NAMESPACE",
    "RELEASE_LUA",
    "AgentLocks",
    "Heartbeat",
    "RedisURLError",
    "RoundLocks",
    "cli_holder",
    "redis_url",
]

logger = logging.getLogger(__name__)

# The same namespace as backends.state (the backend's other shared keys live beside it).
NAMESPACE: Final = "assistant:"

# Take the lock when it is free or already ours (answer ''); answer the holder otherwise.
# Public with RELEASE_LUA: backends.state's short posting locks run the same two scripts.
CLAIM_LUA: Final = """
local current = redis.call('GET', KEYS[1])
if (not current) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return current
"""
_RENEW_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_REPLACE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))


def redis_url(broker_url: str, result_backend: str | None = None) -> str:
    """The Redis the shared state lives in: the result backend's when it is Redis, else the broker's.

    The round locks, the backend's coordination state (``backends.state``) and the agent's
    heartbeat all live there; this is the one place that picks it.

    Raises:
        RedisURLError: Neither is a Redis URL (also a ``ValueError``, for settings validators).
    """
    for url in (result_backend, broker_url):
        if url and url.startswith(("redis://", "rediss://", "unix://")):
            return url
    raise RedisURLError(
        "the round locks and the backend's coordination state live in Redis, but neither the broker nor "
        f"the result backend is a Redis URL ({broker_url!r})",
        fix="set ASSISTANT_BROKER_URL=redis://host:6379/0",
    )


class RedisURLError(AssistantError, ValueError):
    """Neither the broker nor the result backend is a Redis URL."""


def cli_holder() -> str:
    """A holder id for a round run by this process outside Celery (``cli:<host>:<pid>:<8 hex>``)."""
    return f"cli:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RoundLocks:
    """The round locks of every project in one Redis (see the module docstring).

    Args:
        client: A Redis client.
        prefix: ``Settings.redis_key_prefix`` (deployments and test sessions sharing a Redis).
    """

    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client = client
        self.ns = f"{prefix}{NAMESPACE}"

    @classmethod
    def from_url(cls, url: str, prefix: str = "", *, timeout_s: float = 2.0, retries: int = 2) -> RoundLocks:
        """Locks over a new client of ``url`` with short timeouts (no connection until the first call)."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries),
        )
        return cls(client, prefix)

    def key(self, project: int) -> str:
        """The Redis key of a project's lock."""
        return f"{self.ns}round-lock:{project}"

    def acquire(self, project: int, holder: str, ttl_s: float) -> str | None:
        """Take the lock if it is free (``SET NX``).

        Returns:
            None when ``holder`` took it, else the current holder (``"unknown"`` in the rare race
            where it expired between the two calls and someone else took it again).
        """
        key = self.key(project)
        if self.client.set(key, holder, nx=True, px=_ms(ttl_s)):
            return None
        current = self.client.get(key)
        if current is None:  # expired between the two calls: try once more
            return None if self.client.set(key, holder, nx=True, px=_ms(ttl_s)) else "unknown"
        return _text(current)

    def claim(self, project: int, holder: str, ttl_s: float) -> str | None:
        """Take the lock if it is free or already ``holder``'s, with a new TTL (a round starting to run).

        Returns:
            None when ``holder`` holds it now, else the other holder.
        """
        current = _text(self.client.eval(CLAIM_LUA, 1, self.key(project), holder, _ms(ttl_s)))
        return current or None

    def renew(self, project: int, holder: str, ttl_s: float) -> bool:
        """Extend ``holder``'s lock to ``ttl_s`` from now; False when it no longer holds it."""
        return bool(self.client.eval(_RENEW_LUA, 1, self.key(project), holder, _ms(ttl_s)))

    def replace(self, project: int, expected: str, holder: str, ttl_s: float) -> bool:
        """Hand the lock from ``expected`` (a stale holder) to ``holder``; False when someone else holds it now."""
        return bool(self.client.eval(_REPLACE_LUA, 1, self.key(project), expected, holder, _ms(ttl_s)))

    def release(self, project: int, holder: str) -> bool:
        """Drop the lock if ``holder`` holds it."""
        return bool(self.client.eval(RELEASE_LUA, 1, self.key(project), holder))

    def holder(self, project: int) -> str | None:
        """Who holds the lock, or None."""
        value = self.client.get(self.key(project))
        return None if value is None else _text(value)

    def ttl_s(self, project: int) -> float | None:
        """Seconds until the lock expires, or None when it is free."""
        ms: Any = self.client.pttl(self.key(project))
        return None if ms is None or int(ms) < 0 else int(ms) / 1000.0


class AgentLocks(RoundLocks):
    """Per-project agent locks (one agent runs a project): the round lock's scripts under another key.

    The agent takes them (``agent.services``); the dashboard reads who holds one (``dashboard.data``).
    """

    def key(self, project: int) -> str:
        """``<prefix>assistant:agent-lock:<project>``."""
        return f"{self.ns}agent-lock:{project}"


class Heartbeat:
    """Renews a held lock from a daemon thread every ``interval_s`` until stopped.

    Use it as a context manager; leaving the block stops the thread and releases the lock.

    Args:
        locks: The locks.
        project: The project.
        holder: The holder (must hold the lock already: :meth:`RoundLocks.claim`).
        ttl_s: The TTL each renewal sets.
        interval_s: Seconds between renewals (default: a third of the TTL, so two renewals may
            fail in a row, e.g. a Redis restart, before the lock expires).
        release: Release the lock on exit.
    """

    def __init__(
        self,
        locks: RoundLocks,
        project: int,
        holder: str,
        ttl_s: float,
        *,
        interval_s: float | None = None,
        release: bool = True,
    ) -> None:
        self.locks = locks
        self.project = project
        self.holder = holder
        self.ttl_s = ttl_s
        self.interval_s = interval_s if interval_s is not None else ttl_s / 3.0
        self.release_on_exit = release
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        """True once a renewal found the lock held by someone else (or gone)."""
        return self._lost.is_set()

    def start(self) -> Heartbeat:
        """Start renewing (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"round-lock-heartbeat-{self.project}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.locks.renew(self.project, self.holder, self.ttl_s):
                    self._lost.set()
                    logger.error("project %s: the round lock of %s was lost", self.project, self.holder)
                    return
            except redis.RedisError as exc:
                # Transient: the lock survives until its TTL runs out; keep trying.
                logger.warning("project %s: cannot renew the round lock: %s", self.project, exc)

    def stop(self) -> None:
        """Stop renewing, and release the lock if asked to (never someone else's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self.interval_s))
        if self.release_on_exit and not self.lost:
            try:
                self.locks.release(self.project, self.holder)
            except redis.RedisError as exc:
                logger.warning("project %s: cannot release the round lock (it will expire): %s", self.project, exc)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
