"""Label Studio's two kinds of API key, told apart by their shape.

A **legacy token** is an opaque string, sent as ``Authorization: Token <key>``. A **personal access
token** (PAT) is a JWT *refresh* token: it is exchanged at ``POST /api/token/refresh/`` for a
short-lived access token sent as ``Bearer`` (the SDK's client does this itself; the workers' media
downloads do it in ``workers.media.LabelStudioAuth``). A key is a PAT when it has a JWT's three
dot-separated parts and its first part decodes to a JSON header naming an algorithm.

Example:
    >>> token_kind("0123456789abcdef0123456789abcdef01234567")
    'a legacy token'
"""

from __future__ import annotations

import base64
import binascii
import json

__all__ = ["is_personal_access_token", "token_kind"]


def is_personal_access_token(key: str) -> bool:
    """Whether ``key`` is a personal access token (a JWT) rather than a legacy token."""
    parts = key.strip().split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


def token_kind(key: str) -> str:
    """``"a personal access token"`` or ``"a legacy token"``, for messages."""
    return "a personal access token" if is_personal_access_token(key) else "a legacy token"
