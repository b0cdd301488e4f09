"""A key prefix of its own on the test Redis, for one integration stack.

Every stack runs its broker, locks and ledgers under a fresh prefix in a Redis database of its
own, skips when Redis is not reachable, and deletes only its own keys afterwards.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

__all__ = ["RedisNamespace"]


class RedisNamespace:
    """A fresh key prefix on the Redis at ``url``; ``close`` deletes its keys.

    Args:
        url: The test Redis database (``redis://127.0.0.1:6379/12``).
        name: Goes into the prefix, so a leftover key says which stack left it.
    """

    def __init__(self, url: str, name: str) -> None:
        import redis

        self.url = url
        self.prefix = f"assistant-{name}-{uuid.uuid4().hex[:10]}:"
        self.client: redis.Redis = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self.client.close()
            pytest.skip(f"Redis is not reachable at {url}: {exc}")

    def close(self) -> None:
        """Delete every key under the prefix and close the connection."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=500))
        if keys:
            self.client.delete(*keys)
        self.client.close()
