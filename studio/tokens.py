"""Label Studio's two kinds of API key, told apart by their shape, and the header each is sent with.

A **legacy token** is an opaque string, sent as ``Authorization: Token <key>``. A **personal access
token** (PAT) is a JWT *refresh* token: it is exchanged at ``POST /api/token/refresh/`` for a
short-lived access token sent as ``Bearer`` (the SDK's client does this itself;
:class:`LabelStudioAuth` does it for plain httpx requests, the workers' media downloads). A key is
a PAT when it has a JWT's three dot-separated parts and its first part decodes to a JSON header
naming an algorithm.

Example:
    >>> token_kind("0123456789abcdef0123456789abcdef01234567")
    'a legacy token'
"""

from __future__ import annotations

import base64
import binascii
import json
import threading

import httpx

from studio.errors import LabelStudioError

__all__ = ["LabelStudioAuth", "is_personal_access_token", "token_kind"]


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


class LabelStudioAuth:
    """The ``Authorization`` header for Label Studio, for both kinds of API key.

    A legacy token is sent as ``Token <key>``. A personal access token (PAT) is exchanged at
    ``POST /api/token/refresh/`` for a short-lived access token sent as ``Bearer``, cached, and
    refreshed when Label Studio answers 401 (docs/workers.md). For plain httpx requests (the
    workers' media downloads); the SDK's client does the same itself.

    Args:
        api_key: The key (empty: no header).
        base_url: Label Studio's URL.
        client: The HTTP client used for the refresh call.
    """

    def __init__(self, api_key: str, base_url: str, client: httpx.Client) -> None:
        self._key = api_key.strip()
        self._base = base_url.rstrip("/")
        self._client = client
        self._lock = threading.Lock()
        self._access: str | None = None
        self.is_pat = is_personal_access_token(self._key)

    def headers(self) -> dict[str, str]:
        """The header to send now (fetches an access token first for a PAT).

        Raises:
            LabelStudioError: The PAT could not be exchanged (Label Studio refused or did not answer).
        """
        if not self._key:
            return {}
        if not self.is_pat:
            return {"Authorization": f"Token {self._key}"}
        with self._lock:
            if self._access is None:
                self._access = self._exchange()
            return {"Authorization": f"Bearer {self._access}"}

    def refresh(self, rejected: dict[str, str]) -> bool:
        """Get a new access token after ``rejected`` got a 401; False when that cannot help.

        Raises:
            LabelStudioError: The PAT could not be exchanged.
        """
        if not self.is_pat:
            return False
        with self._lock:
            # Another thread may have refreshed already: only the token that failed is replaced.
            if rejected.get("Authorization") == f"Bearer {self._access}":
                self._access = self._exchange()
        return True

    def _exchange(self) -> str:
        try:
            resp = self._client.post(f"{self._base}/api/token/refresh/", json={"refresh": self._key})
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                "could not exchange the Label Studio personal access token", why=f"{type(exc).__name__}: {exc}"
            ) from exc
        access = resp.json().get("access") if resp.status_code == 200 else None
        if not isinstance(access, str) or not access:
            raise LabelStudioError(
                "Label Studio refused the personal access token",
                status=resp.status_code,
                why=f"POST /api/token/refresh/ answered {resp.status_code}",
                fix="create a new token in Label Studio (Account & Settings > Personal Access Token) "
                "and set ASSISTANT_LABEL_STUDIO_API_KEY",
            )
        return access
