"""The round lock in a real Redis (DB 11, a key prefix per test): one holder, heartbeat, expiry, takeover."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from errors import AssistantError
from state.locks import Heartbeat, RoundLocks, cli_holder, redis_url
from tests.integration.redis_namespace import RedisNamespace

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture
def locks() -> Iterator[RoundLocks]:
    namespace = RedisNamespace(REDIS_URL, "locks")  # skips when Redis is down
    try:
        yield RoundLocks(namespace.client, namespace.prefix)
    finally:
        namespace.close()


def test_one_holder_at_a_time_and_only_the_holder_releases(locks: RoundLocks) -> None:
    assert locks.key(3).endswith("assistant:round-lock:3")
    assert locks.acquire(3, "a", 30) is None
    assert locks.acquire(3, "b", 30) == "a"
    assert locks.claim(3, "b", 30) == "a"
    assert locks.claim(3, "a", 5) is None and locks.ttl_s(3) == pytest.approx(5, abs=0.5)  # re-taken, new TTL
    assert not locks.release(3, "b") and locks.holder(3) == "a"
    assert not locks.replace(3, "x", "b", 30) and locks.replace(3, "a", "b", 30) and locks.holder(3) == "b"
    assert locks.release(3, "b") and locks.holder(3) is None and locks.ttl_s(3) is None
    assert locks.acquire(4, "c", 30) is None and locks.holder(3) is None  # projects are independent


def test_a_heartbeat_keeps_the_lock_past_its_ttl_and_releases_it_at_the_end(locks: RoundLocks) -> None:
    holder = cli_holder()
    assert holder.startswith("cli:") and locks.claim(5, holder, 0.6) is None
    with Heartbeat(locks, 5, holder, 0.6, interval_s=0.15) as beat:
        time.sleep(1.5)  # 2.5 TTLs
        assert locks.holder(5) == holder and not beat.lost
    assert locks.holder(5) is None


def test_a_dead_holders_lock_expires_and_the_next_round_takes_it(locks: RoundLocks) -> None:
    assert locks.claim(6, "dead-round", 0.4) is None  # nobody renews it: its process "died"
    assert locks.claim(6, "next-round", 30) == "dead-round"
    time.sleep(0.6)
    assert locks.claim(6, "next-round", 30) is None


def test_a_heartbeat_notices_a_lost_lock_and_never_releases_anothers(locks: RoundLocks) -> None:
    assert locks.claim(7, "slow", 0.3) is None
    beat = Heartbeat(locks, 7, "slow", 0.3, interval_s=0.6)  # renews too late on purpose
    beat.start()
    time.sleep(0.4)
    assert locks.claim(7, "other", 30) is None  # expired; another round took it
    time.sleep(0.5)
    assert beat.lost
    beat.stop()
    assert locks.holder(7) == "other"


def test_the_lock_lives_in_the_result_backends_redis_when_there_is_one() -> None:
    assert redis_url("redis://broker/0", "redis://results/1") == "redis://results/1"
    assert redis_url("redis://broker/0", "db+sqlite:///x") == "redis://broker/0"
    with pytest.raises(ValueError, match="Fix: Set ASSISTANT_BROKER_URL=redis://") as info:
        redis_url("amqp://broker", None)
    assert isinstance(info.value, AssistantError)  # the CLI's boundary renders it without a traceback
