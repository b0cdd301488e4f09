"""Optional authentication of the backend's routes.

- **HTTP Basic** (``ASSISTANT_BASIC_AUTH_USER`` + ``ASSISTANT_BASIC_AUTH_PASSWORD``): Label Studio
  sends it on every ML call (``/setup``, ``/predict``, ``/versions``, START_TRAINING) when the model
  is connected with "Basic auth". ``/health`` stays open: it reveals nothing, and container
  healthchecks need no secret.
- **Webhook token** (``ASSISTANT_WEBHOOK_TOKEN``): Label Studio's auto-created project webhook
  carries no credentials, so ``/webhook`` is exempt from Basic auth and accepts either valid
  Basic credentials (START_TRAINING, which LS sends through its ML client) or the shared secret
  as the header ``X-Assistant-Token`` or the query parameter ``token``. With Basic auth on and no
  token set, ``/webhook`` requires Basic credentials (add an ``Authorization`` header to the
  webhook in Label Studio).

Every comparison is constant-time (:func:`secrets.compare_digest`), and credentials are never
logged: failures log the route and the reason only.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from dataclasses import dataclass

from pydantic import SecretStr

__all__ = ["TOKEN_HEADER", "TOKEN_QUERY", "AuthPolicy", "AuthResult"]

logger = logging.getLogger(__name__)

TOKEN_HEADER = "x-assistant-token"
TOKEN_QUERY = "token"


@dataclass(frozen=True)
class AuthResult:
    """Whether a request may proceed, and if not why (safe to send back: no secrets)."""

    ok: bool
    reason: str = ""


_OK = AuthResult(True)


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class AuthPolicy:
    """The configured credentials and the checks on them.

    Args:
        user: Basic-auth user (None: Basic auth off).
        password: Basic-auth password.
        webhook_token: Shared secret of ``/webhook`` (None: none).
    """

    user: str | None = None
    password: SecretStr | None = None
    webhook_token: SecretStr | None = None

    @property
    def basic_enabled(self) -> bool:
        """Whether Basic auth is on."""
        return bool(self.user) and self.password is not None

    def check_basic(self, authorization: str | None) -> AuthResult:
        """Check an ``Authorization`` header against the Basic credentials (ok when Basic auth is off)."""
        if not self.basic_enabled:
            return _OK
        assert self.user is not None and self.password is not None  # basic_enabled says so
        if not authorization:
            return AuthResult(False, "this backend requires HTTP Basic auth and the request carried none")
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return AuthResult(False, f"this backend requires HTTP Basic auth, not {scheme[:20]!r}")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return AuthResult(False, "the Basic auth header is not valid base64 'user:password'")
        # Both comparisons always run, so timing does not tell which part was wrong.
        good_user = _same(user, self.user)
        good_password = _same(password, self.password.get_secret_value())
        if not (sep and good_user and good_password):
            return AuthResult(False, "wrong Basic auth user or password")
        return _OK

    def check_webhook(self, authorization: str | None, token: str | None) -> AuthResult:
        """Check ``/webhook``: a valid token, or valid Basic credentials, or nothing configured."""
        if self.webhook_token is None and not self.basic_enabled:
            return _OK
        if self.webhook_token is not None and token is not None:
            if _same(token, self.webhook_token.get_secret_value()):
                return _OK
            return AuthResult(False, "wrong webhook token")
        if self.basic_enabled and authorization:
            return self.check_basic(authorization)
        if self.webhook_token is not None:
            return AuthResult(
                False,
                f"this webhook requires the token: send the header {TOKEN_HEADER} "
                f"or ?{TOKEN_QUERY}= in the webhook URL",
            )
        return self.check_basic(authorization)
