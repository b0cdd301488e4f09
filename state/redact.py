"""Secrets kept out of what is printed and logged: a URL without the password it may carry.

Broker, result-backend and ledger URLs may carry one (``redis://:secret@host:6379/0``,
``postgresql://user:secret@db/assistant``); every message, log line and ``--json`` output that
shows such a URL shows it through :func:`redact_url`.
"""

from __future__ import annotations

import re

__all__ = ["redact_url"]

# The user part may be empty (Redis URLs usually carry a password alone), and the password runs to
# the last "@" before the path: an unescaped "@" inside it must not leave its tail in view.
_PASSWORD = re.compile(r"//([^:/@]*):[^/]*@")


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``.

    Example:
        >>> redact_url("redis://:secret@127.0.0.1:6379/0")
        'redis://:***@127.0.0.1:6379/0'
        >>> redact_url("postgresql://me:secret@db/assistant")
        'postgresql://me:***@db/assistant'
        >>> redact_url("redis://127.0.0.1:6379/0")
        'redis://127.0.0.1:6379/0'
    """
    return _PASSWORD.sub(r"//\1:***@", url)
