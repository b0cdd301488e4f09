"""State the backend shares across processes, in Redis: claims, in-flight tasks, versions, round locks, counters.

Nothing here is the source of truth for predictions (Label Studio is) or corrections (the ledger
is). It is short-lived coordination between the web processes, the background publishing task
and the CLI, which all reach the same Redis (the Celery broker's)::

    <prefix>assistant:claim:<job>:<chunk>          who delivers a chunk's predictions: "inline"
                                                   (/predict's answer) or "background" (the
                                                   publish task); SET NX, first one wins
    <prefix>assistant:inflight:<proj>:<ver>:<task>  a job already covers this (task, version)
    <prefix>assistant:versions:<proj>               model versions /setup served (sorted set)
    <prefix>assistant:round-lock:<proj>             the Celery id of the project's queued or
                                                   running round (at most one): state.locks,
                                                   shared with the workers, whose running round
                                                   keeps it alive by a heartbeat
    <prefix>assistant:stats                         counters of the background path (hash)
    <prefix>assistant:marker:<name>                 a marker a bulk run sets when it starts and
                                                   checks while it follows its chunks: gone means
                                                   Redis lost its data (restarted without
                                                   persistence, flushed), queued messages included
    <prefix>assistant:lock:<name>                   short locks: one publisher at a time posts a
                                                   (task, version) to Label Studio

:class:`MemoryState` has the same semantics in one process, for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from state.locks import CLAIM_LUA, RELEASE_LUA, RoundLocks

__all__ = ["MemoryState", "RedisState", "SharedState"]

NAMESPACE: Final = "assistant:"
# Versions kept per project for GET /versions.
_VERSIONS_KEPT: Final = 50
_GLOBAL: Final = "all"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedState(Protocol):
    """What the backend, the publish task and the CLI coordinate through (see the module docstring)."""

    def claim(self, key: str, owner: str) -> bool:
        """Take ``key`` for ``owner`` if nobody holds it; True when ``owner`` now holds it."""
        ...

    def reserve(self, project: int | None, version: str, task_ids: Sequence[int]) -> list[int]:
        """Mark tasks in flight for ``version``; returns those that were not already."""
        ...

    def release(self, project: int | None, version: str, task_ids: Sequence[int]) -> None:
        """Clear the in-flight marks of tasks (delivered, failed, or given up)."""
        ...

    def record_version(self, project: int | None, version: str) -> None:
        """Remember that ``version`` was served for ``project`` (for ``/versions``)."""
        ...

    def served_versions(self, project: int | None, limit: int = _VERSIONS_KEPT) -> list[str]:
        """Versions served for ``project`` (all projects for None), newest first."""
        ...

    def acquire_round_lock(self, project: int, holder: str, ttl_s: int) -> str | None:
        """Take the project's round lock; None when taken, else the current holder."""
        ...

    def replace_round_lock(self, project: int, expected: str, holder: str, ttl_s: int) -> bool:
        """Hand a stale lock from ``expected`` to ``holder``; False when someone else holds it now."""
        ...

    def release_round_lock(self, project: int, holder: str) -> bool:
        """Drop the lock if ``holder`` holds it."""
        ...

    def add_stats(self, counts: Mapping[str, int]) -> None:
        """Add to the background-path counters."""
        ...

    def stats(self) -> dict[str, int]:
        """The background-path counters."""
        ...

    def touch_marker(self, name: str, ttl_s: int) -> bool:
        """Set the marker ``name`` for ``ttl_s`` seconds; True when it was there already.

        False on the first call, and again whenever the store lost its data in between.
        """
        ...

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lock ``name`` for ``ttl_s`` seconds if it is free or already ``owner``'s."""
        ...

    def release_lock(self, name: str, owner: str) -> None:
        """Drop the lock ``name`` if ``owner`` holds it."""
        ...


class RedisState:
    """:class:`SharedState` in Redis.

    Args:
        client: A Redis client (with short socket timeouts on the request path).
        prefix: ``Settings.redis_key_prefix`` (deployments and test sessions sharing a Redis).
        claim_ttl_s: Lifetime of a claim (a chunk's result expires after ``result_expires_s``).
        inflight_ttl_s: Lifetime of an in-flight mark.
    """

    def __init__(self, client: redis.Redis, prefix: str = "", *, claim_ttl_s: int = 86_400, inflight_ttl_s: int = 3600):
        self.client = client
        self.ns = f"{prefix}{NAMESPACE}"
        self.claim_ttl_s = claim_ttl_s
        self.inflight_ttl_s = inflight_ttl_s
        self.round_locks = RoundLocks(client, prefix)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "", *, timeout_s: float = 0.5, retries: int = 0, **ttls: int
    ) -> RedisState:
        """A state over a new client of ``url`` (no connection until the first call).

        Args:
            url: The Redis URL.
            prefix: The key prefix.
            timeout_s: Connect and read timeout of each call.
            retries: Retries of a failed call. redis-py's default (10, with exponential backoff)
                could hold ``/setup`` past Label Studio's 3 s when Redis is down; the request
                path uses none and fails fast.
            **ttls: ``claim_ttl_s``, ``inflight_ttl_s``.
        """
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        )
        return cls(client, prefix, **ttls)

    def _inflight_key(self, project: int | None, version: str, task: int) -> str:
        return f"{self.ns}inflight:{project}:{version}:{task}"

    def claim(self, key: str, owner: str) -> bool:
        """See :meth:`SharedState.claim`."""
        full = f"{self.ns}claim:{key}"
        if self.client.set(full, owner, nx=True, ex=self.claim_ttl_s):
            return True
        held = self.client.get(full)
        return held is not None and _text(held) == owner

    def reserve(self, project: int | None, version: str, task_ids: Sequence[int]) -> list[int]:
        """See :meth:`SharedState.reserve`."""
        pipe = self.client.pipeline(transaction=False)
        for task in task_ids:
            pipe.set(self._inflight_key(project, version, task), "1", nx=True, ex=self.inflight_ttl_s)
        return [task for task, ok in zip(task_ids, pipe.execute(), strict=True) if ok]

    def release(self, project: int | None, version: str, task_ids: Sequence[int]) -> None:
        """See :meth:`SharedState.release`."""
        if task_ids:
            self.client.delete(*(self._inflight_key(project, version, t) for t in task_ids))

    def record_version(self, project: int | None, version: str) -> None:
        """See :meth:`SharedState.record_version`."""
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for scope in {str(project) if project is not None else _GLOBAL, _GLOBAL}:
            key = f"{self.ns}versions:{scope}"
            pipe.zadd(key, {version: now})
            pipe.zremrangebyrank(key, 0, -_VERSIONS_KEPT - 1)  # keep the newest ones only
        pipe.execute()

    def served_versions(self, project: int | None, limit: int = _VERSIONS_KEPT) -> list[str]:
        """See :meth:`SharedState.served_versions`."""
        scope = str(project) if project is not None else _GLOBAL
        raw: list[Any] = self.client.zrevrange(f"{self.ns}versions:{scope}", 0, limit - 1)
        return [_text(v) for v in raw]

    def acquire_round_lock(self, project: int, holder: str, ttl_s: int) -> str | None:
        """See :meth:`SharedState.acquire_round_lock`."""
        return self.round_locks.acquire(project, holder, ttl_s)

    def replace_round_lock(self, project: int, expected: str, holder: str, ttl_s: int) -> bool:
        """See :meth:`SharedState.replace_round_lock`."""
        return self.round_locks.replace(project, expected, holder, ttl_s)

    def release_round_lock(self, project: int, holder: str) -> bool:
        """See :meth:`SharedState.release_round_lock`."""
        return self.round_locks.release(project, holder)

    def add_stats(self, counts: Mapping[str, int]) -> None:
        """See :meth:`SharedState.add_stats`."""
        pipe = self.client.pipeline(transaction=False)
        for name, value in counts.items():
            if value:
                pipe.hincrby(f"{self.ns}stats", name, value)
        pipe.execute()

    def stats(self) -> dict[str, int]:
        """See :meth:`SharedState.stats`."""
        raw: dict[Any, Any] = self.client.hgetall(f"{self.ns}stats")
        return {_text(k): int(v) for k, v in raw.items()}

    def touch_marker(self, name: str, ttl_s: int) -> bool:
        """See :meth:`SharedState.touch_marker`."""
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(f"{self.ns}marker:{name}")
        pipe.set(f"{self.ns}marker:{name}", "1", ex=ttl_s)
        existed, _ = pipe.execute()
        return bool(existed)

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """See :meth:`SharedState.acquire_lock`."""
        # The round lock's claim script: free or already ``owner``'s (a redelivered message re-enters
        # its own) takes it and answers ''; else it answers the holder.
        holder = self.client.eval(CLAIM_LUA, 1, f"{self.ns}lock:{name}", owner, max(1, int(ttl_s * 1000)))
        return not _text(holder)

    def release_lock(self, name: str, owner: str) -> None:
        """See :meth:`SharedState.release_lock`."""
        self.client.eval(RELEASE_LUA, 1, f"{self.ns}lock:{name}", owner)


class MemoryState:
    """:class:`SharedState` in one process (tests, and a backend run without Redis). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.claims: dict[str, str] = {}
        self.inflight: set[tuple[int | None, str, int]] = set()
        self.versions: dict[str, dict[str, float]] = {}
        self.round_locks: dict[int, str] = {}
        self.counters: dict[str, int] = {}
        self.markers: set[str] = set()
        self.locks: dict[str, tuple[str, float]] = {}

    def claim(self, key: str, owner: str) -> bool:
        """See :meth:`SharedState.claim`."""
        with self._lock:
            return self.claims.setdefault(key, owner) == owner

    def reserve(self, project: int | None, version: str, task_ids: Sequence[int]) -> list[int]:
        """See :meth:`SharedState.reserve`."""
        with self._lock:
            fresh = [t for t in task_ids if (project, version, t) not in self.inflight]
            self.inflight.update((project, version, t) for t in fresh)
            return fresh

    def release(self, project: int | None, version: str, task_ids: Sequence[int]) -> None:
        """See :meth:`SharedState.release`."""
        with self._lock:
            self.inflight.difference_update((project, version, t) for t in task_ids)

    def record_version(self, project: int | None, version: str) -> None:
        """See :meth:`SharedState.record_version`."""
        with self._lock:
            for scope in {str(project) if project is not None else _GLOBAL, _GLOBAL}:
                self.versions.setdefault(scope, {})[version] = time.monotonic()

    def served_versions(self, project: int | None, limit: int = _VERSIONS_KEPT) -> list[str]:
        """See :meth:`SharedState.served_versions`."""
        with self._lock:
            seen = self.versions.get(str(project) if project is not None else _GLOBAL, {})
            return sorted(seen, key=lambda v: -seen[v])[:limit]

    def acquire_round_lock(self, project: int, holder: str, ttl_s: int) -> str | None:
        """See :meth:`SharedState.acquire_round_lock`."""
        with self._lock:
            current = self.round_locks.setdefault(project, holder)
            return None if current == holder else current

    def replace_round_lock(self, project: int, expected: str, holder: str, ttl_s: int) -> bool:
        """See :meth:`SharedState.replace_round_lock`."""
        with self._lock:
            if self.round_locks.get(project) != expected:
                return False
            self.round_locks[project] = holder
            return True

    def release_round_lock(self, project: int, holder: str) -> bool:
        """See :meth:`SharedState.release_round_lock`."""
        with self._lock:
            if self.round_locks.get(project) != holder:
                return False
            del self.round_locks[project]
            return True

    def add_stats(self, counts: Mapping[str, int]) -> None:
        """See :meth:`SharedState.add_stats`."""
        with self._lock:
            for name, value in counts.items():
                self.counters[name] = self.counters.get(name, 0) + value

    def stats(self) -> dict[str, int]:
        """See :meth:`SharedState.stats`."""
        with self._lock:
            return dict(self.counters)

    def touch_marker(self, name: str, ttl_s: int) -> bool:
        """See :meth:`SharedState.touch_marker` (no expiry in memory)."""
        with self._lock:
            existed = name in self.markers
            self.markers.add(name)
            return existed

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """See :meth:`SharedState.acquire_lock`."""
        with self._lock:
            holder, until = self.locks.get(name, (owner, 0.0))
            if holder != owner and until > time.monotonic():
                return False
            self.locks[name] = (owner, time.monotonic() + ttl_s)
            return True

    def release_lock(self, name: str, owner: str) -> None:
        """See :meth:`SharedState.release_lock`."""
        with self._lock:
            if self.locks.get(name, ("", 0.0))[0] == owner:
                del self.locks[name]
