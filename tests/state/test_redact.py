"""``state.redact``: the one way a URL is shown without its password."""

from __future__ import annotations

import pytest

from state.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # A Redis password without a user: the usual broker URL, missed by an older copy of this rule.
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:s3cret@cache.example:6380/1", "rediss://default:***@cache.example:6380/1"),
        ("postgresql://me:p@ss@db:5432/assistant", "postgresql://me:***@db:5432/assistant"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:////var/lib/assistant/ledger.db", "sqlite:////var/lib/assistant/ledger.db"),
        ("http://user@host:8080/path", "http://user@host:8080/path"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
