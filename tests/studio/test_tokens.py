"""``studio.tokens``: a legacy token and a personal access token told apart by their shape."""

from __future__ import annotations

import base64
import json

import pytest

from studio.tokens import is_personal_access_token, token_kind


def _part(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


PAT = ".".join([_part({"alg": "HS256", "typ": "JWT"}), _part({"token_type": "refresh", "exp": 2_000_000_000}), "c2ln"])


@pytest.mark.parametrize(
    ("key", "pat"),
    [
        (PAT, True),
        (f"  {PAT}\n", True),  # pasted with whitespace
        ("0123456789abcdef0123456789abcdef01234567", False),  # a legacy token: 40 hex characters
        ("a.b.c", False),  # three parts, but no JWT header
        (".".join([_part({"typ": "JWT"}), "x", "y"]), False),  # a header that names no algorithm
        ("", False),
    ],
)
def test_a_key_is_a_personal_access_token_only_when_it_is_a_jwt(key: str, pat: bool) -> None:
    assert is_personal_access_token(key) is pat
    assert token_kind(key) == ("a personal access token" if pat else "a legacy token")
