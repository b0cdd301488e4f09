"""Is the model connected to a project, and does Label Studio send the project's annotations to it?

Label Studio creates the project webhook ``<model URL>/webhook`` when a model is connected, and the
webhook is how every annotation reaches the corrections ledger. Label Studio 1.23 checks that URL
with its SSRF protection (``SSRF_PROTECTION_ENABLED``, separate from ``ML_BLOCK_LOCAL_IP``): a
backend on a loopback or private address gets its model connection, but **no webhook**, and the
"Connect model" dialog shows a 403 ("URL resolves to a reserved network address") that looks like
a harmless glitch. Nothing else would say that corrections are lost, so :func:`check_webhook`
looks, and ``assistant doctor``, the backend (after ``/setup``) and the agent report what it finds.

Two requests (the project's ML backends and its webhooks) through
:class:`~studio.client.LabelStudioClient`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from backends.errors import BackendError
from studio.client import LabelStudioClient

__all__ = ["WebhookCheck", "WebhookWatch", "check_webhook", "missing_webhook_error"]

logger = logging.getLogger(__name__)

# The events that carry corrections; a webhook without them loses some.
_NEEDED_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


@dataclass(frozen=True)
class WebhookCheck:
    """What Label Studio says about a project's model connection and webhook.

    Attributes:
        project: The project.
        model_urls: The URLs of the ML backends connected to the project.
        webhook_urls: The URLs of the project's webhooks (query strings left out: a token may sit there).
        matching: The webhooks that send every annotation event, with payloads, to a connected
            model's ``/webhook``.
        problem: What is wrong (None when nothing is), as a :class:`BackendError` (what, why, fix).
    """

    project: int
    model_urls: tuple[str, ...]
    webhook_urls: tuple[str, ...]
    matching: tuple[str, ...] = ()
    problem: BackendError | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """Whether corrections reach the assistant."""
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "project": self.project,
            "ok": self.ok,
            "model_urls": list(self.model_urls),
            "webhook_urls": list(self.webhook_urls),
            "matching": list(self.matching),
            "problem": None if self.problem is None else self.problem.message,
        }


def _bare(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _sends_corrections(hook: dict[str, Any]) -> bool:
    if hook.get("is_active") is False or not hook.get("send_payload", True):
        return False
    if hook.get("send_for_all_actions", True):
        return True
    actions = set(hook.get("actions") or ())
    return all(action in actions for action in _NEEDED_ACTIONS)


def missing_webhook_error(project: int, model_urls: Iterable[str]) -> BackendError:
    """The error for a project whose model is connected but whose annotations never reach it."""
    expected = ", ".join(f"{_bare(u)}/webhook" for u in model_urls)
    return BackendError(
        f"project {project} has no webhook to {expected}: its annotations never reach the corrections ledger, "
        "so new_corrections stays 0 and no round is ever triggered",
        why="Label Studio creates that webhook when the model is connected, unless its SSRF protection refuses "
        "the backend's address (SSRF_PROTECTION_ENABLED; the Connect dialog then showed a 403 'URL resolves to a "
        "reserved network address')",
        fix="start Label Studio with SSRF_PROTECTION_ENABLED=false on a one-user machine, or with "
        "USE_DEFAULT_BANNED_SUBNETS=false and USER_ADDITIONAL_BANNED_SUBNETS listing what it must never reach "
        "(compose.yaml does), then delete and connect the model again; or add the webhook by hand under "
        f"Settings > Webhooks with the URL {expected} and 'Send payload' on",
    )


def check_webhook(client: LabelStudioClient, project: int) -> WebhookCheck:
    """Look up the project's ML backends and webhooks and say whether corrections reach a connected model.

    Raises:
        StudioError: Label Studio could not be asked (unreachable, a refused token, no such project).
    """
    model_urls = tuple(str(m.get("url") or "") for m in client.ml_backends(project))
    found = client.webhooks(project)
    # The list is filtered by project in Label Studio 1.23; older servers list the organisation's.
    found = [h for h in found if h.get("project") in (None, project)]
    webhook_urls = tuple(_bare(str(h.get("url") or "")) for h in found)
    if not model_urls:
        problem = BackendError(
            f"no model is connected to project {project}",
            fix="in Label Studio open the project's Settings > Model > Connect Model and enter the backend's URL "
            "(http://127.0.0.1:9090 in the README's stack, http://backend:9090 in the compose stack)",
        )
        return WebhookCheck(project, model_urls, webhook_urls, problem=problem)
    expected = {f"{_bare(u)}/webhook" for u in model_urls}
    matching = tuple(_bare(str(h["url"])) for h in found if _bare(str(h.get("url") or "")) in expected)
    sending = tuple(
        _bare(str(h["url"])) for h in found if _bare(str(h.get("url") or "")) in expected and _sends_corrections(h)
    )
    if sending:
        return WebhookCheck(project, model_urls, webhook_urls, sending)
    if matching:
        problem = BackendError(
            f"project {project}'s webhook to {matching[0]} is inactive, sends no payload, or leaves out annotation "
            "events: some corrections never reach the ledger",
            fix="in Settings > Webhooks make it active, with 'Send payload' on and every annotation event "
            f"({', '.join(_NEEDED_ACTIONS)}) ticked",
        )
    else:
        problem = missing_webhook_error(project, model_urls)
    return WebhookCheck(project, model_urls, webhook_urls, matching, problem)


class WebhookWatch:
    """Checks each project's webhook a few seconds after its ``/setup``, in the background, and logs a problem.

    ``/setup`` answers at once, whatever the check finds (Label Studio gives it 3 s). The check waits
    ``delay_s`` first: when a model is connected, Label Studio calls ``/setup`` to validate it *before*
    it creates the webhook. A project is checked again at most every ``interval_s`` (``/setup`` runs
    before every prediction batch).

    Args:
        client: Label Studio (the backend's own client).
        delay_s: Seconds between a project's ``/setup`` and its check.
        interval_s: Seconds between two checks of one project.
    """

    def __init__(self, client: LabelStudioClient, *, delay_s: float = 3.0, interval_s: float = 600.0) -> None:
        self.client = client
        self.delay_s = delay_s
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._due: dict[int, float] = {}
        self.last: dict[int, WebhookCheck] = {}

    def seen(self, project: int | None) -> threading.Timer | None:
        """Schedule a check of ``project`` if one is due; returns the timer (None when none was scheduled)."""
        if project is None:
            return None
        now = time.monotonic()
        with self._lock:
            if self._due.get(project, 0.0) > now:
                return None
            self._due[project] = now + self.interval_s
        timer = threading.Timer(self.delay_s, self.check, args=(project,))
        timer.daemon = True
        timer.name = f"webhook-check-{project}"
        timer.start()
        return timer

    def check(self, project: int) -> WebhookCheck | None:
        """Check now and log what is wrong (never raises)."""
        try:
            found = check_webhook(self.client, project)
        except Exception as exc:  # Label Studio down or a refused token: say so, try again later
            logger.warning("could not check project %s's webhook in Label Studio: %s", project, exc)
            return None
        self.last[project] = found
        if found.problem is not None:
            logger.warning("%s", found.problem.message)  # it names the project
        else:
            logger.info("project %s: annotations reach %s", project, ", ".join(found.matching))
        return found
