"""``/webhook``: annotation events go to the corrections ledger, START_TRAINING queues a round.

Label Studio gives a webhook 1 s, one try, and never reads the answer, so the handler only
appends rows (one SQLite/PostgreSQL transaction) or takes a Redis lock and sends one message.

==========================================  ======================================  ======
``ANNOTATION_CREATED`` / ``_UPDATED``       one ledger row (an edit is a new row)   201
``ANNOTATIONS_CREATED`` (bulk, a list)      one row per annotation                  201
``ANNOTATIONS_DELETED`` / ``ANNOTATION_``   one ``deleted`` row per annotation id   201
``DELETED``
``START_TRAINING``                          queue ``TRAIN_ROUND`` (per-project      201
                                            lock: at most one queued or running)
anything else                               ignored                                 200
==========================================  ======================================  ======

After recording annotation or deletion rows, the reply names the project whose new annotations a
worker should count against the predictions they started from (``backends.effort``); the app
sends that one message (:meth:`WebhookHandler.request_count`) after the answer has gone out, so a
slow or unreachable broker never holds Label Studio's 1 s. A failure to send it is logged and
counted (``assistant_backend_webhook_events_total{outcome="count_not_queued"}``): the rows are the
durable record of what is still to count, and the beat's periodic pass
(``ASSISTANT_EFFORT_CHECK_INTERVAL_S``) counts them.

Every event that names a project is also handed to ``notify`` when one is given: the app passes
:func:`redis_event_sink`, which appends ``{"action", "project"}`` to a short Redis list that the
agent (``agent/``) blocks on, so it reacts to ``TASKS_CREATED`` or a config change at once instead
of at its next look. A hint only (the agent re-reads the project itself); a failure to notify is
logged and never fails the webhook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis

from backends.dispatch import Dispatcher
from backends.errors import BackendError
from state.ledger import Ledger, LedgerEvent
from studio.protocol import WebhookEvent

__all__ = ["AGENT_EVENTS_KEY", "EventSink", "WebhookHandler", "WebhookReply", "ledger_events", "redis_event_sink"]

logger = logging.getLogger(__name__)

#: The agent's event list: ``<prefix>assistant:agent-events`` (read by ``agent.services.EventInbox``).
AGENT_EVENTS_KEY: Final = "agent-events"
# Events kept for an agent that is not running (older ones are dropped: they are only hints).
_EVENTS_KEPT: Final = 1000
_EVENTS_TTL_S: Final = 86_400

#: ``notify(action, project)``.
EventSink = Callable[[str, int], None]


def redis_event_sink(client: redis.Redis, prefix: str = "") -> EventSink:
    """An :data:`EventSink` appending to the agent's event list (one pipelined round trip, ~1 ms)."""
    key = f"{prefix}assistant:{AGENT_EVENTS_KEY}"

    def notify(action: str, project: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(key, json.dumps({"action": action, "project": project}))
        pipe.ltrim(key, -_EVENTS_KEPT, -1)
        pipe.expire(key, _EVENTS_TTL_S)
        pipe.execute()

    return notify


@dataclass(frozen=True)
class WebhookReply:
    """The status and body to answer with, and the outcome label for the metrics."""

    status_code: int
    body: dict[str, Any]
    outcome: str
    #: The project whose new annotations are to be counted (after answering), if any.
    count: int | None = None


def _raw_annotations(raw: dict[str, Any]) -> list[dict[str, Any]]:
    found = raw.get("annotation")
    if isinstance(found, dict):
        return [found]
    if isinstance(found, list):
        return [a for a in found if isinstance(a, dict)]
    return []


def ledger_events(event: WebhookEvent, raw: dict[str, Any]) -> list[LedgerEvent]:
    """The ledger rows of an annotation or deletion event (none for other actions).

    The result items are stored as Label Studio sent them (``raw``), not as re-serialised models,
    so nothing the editor added is lost.

    Raises:
        BackendError: The event names no project, or an annotation event carries no annotation.
    """
    project = event.project_id
    if project is None:
        raise BackendError(
            f"the {event.action} event names no project", fix='send "project": {"id": <id>} as Label Studio does'
        )
    if event.kind == "delete":
        ids = event.deleted_ids
        if not ids:
            raise BackendError(
                f"the {event.action} event lists no annotation ids", fix='send "annotations": [{"id": ...}]'
            )
        return [LedgerEvent.annotation(event.action, project=project, annotation_id=i) for i in ids]
    raws = _raw_annotations(raw)
    if not raws:
        raise BackendError(f"the {event.action} event carries no annotation", fix='send "annotation": {...}')
    events = []
    for parsed, body in zip(event.annotation_list, raws, strict=True):
        completed_by = parsed.completed_by if isinstance(parsed.completed_by, int) else None
        events.append(
            LedgerEvent.annotation(
                event.action,
                project=parsed.project or project,
                annotation_id=parsed.id,
                task=parsed.task,
                result=[item for item in body.get("result") or [] if isinstance(item, dict)],
                parent_prediction=parsed.parent_prediction,
                completed_by=completed_by,
                was_cancelled=parsed.was_cancelled,
                created_at=body.get("updated_at") or body.get("created_at"),
            )
        )
    return events


class WebhookHandler:
    """Handles one webhook body.

    Args:
        ledger: Where annotation events go.
        dispatcher: Queues rounds.
        notify: Told of every event that names a project (the agent's wake-up; module docstring).
    """

    def __init__(self, ledger: Ledger, dispatcher: Dispatcher, notify: EventSink | None = None) -> None:
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.notify = notify

    def handle(self, raw: dict[str, Any], request_id: str | None = None) -> WebhookReply:
        """Record, queue or ignore one event.

        Raises:
            pydantic.ValidationError: The body is not a webhook event.
            BackendError: A recordable event misses what it needs.
        """
        event = WebhookEvent.model_validate(raw)
        self._notify(event)
        if event.kind in ("annotation", "delete"):
            events = ledger_events(event, raw)
            added = self.ledger.append(events)
            logger.info("webhook %s: project %s: %d rows (%d new)", event.action, event.project_id, len(events), added)
            body = {
                "status": "recorded",
                "action": event.action,
                "project": event.project_id,
                "recorded": added,
                "duplicates": len(events) - added,
            }
            return WebhookReply(201, body, "recorded", event.project_id if added else None)
        if event.kind == "train":
            return self.start_round(event.project_id, request_id)
        logger.debug("webhook %s ignored", event.action)
        return WebhookReply(200, {"status": "ignored", "action": event.action}, "ignored")

    def request_count(self, project: int) -> bool:
        """Ask a worker to count the project's new annotations; False (logged) when it cannot be asked.

        The rows are recorded whatever happens here: the beat's pass counts them later.
        """
        try:
            self.dispatcher.count_effort(project)
        except Exception as exc:
            logger.warning("project %s: could not ask for the effort count: %s", project, exc)
            return False
        return True

    def _notify(self, event: WebhookEvent) -> None:
        if self.notify is None or event.project_id is None:
            return
        try:
            self.notify(event.action, event.project_id)
        except Exception as exc:  # a hint for the agent: never fail Label Studio's webhook over it
            logger.warning("could not forward %s to the agent: %s", event.action, exc)

    def start_round(self, project: int | None, request_id: str | None = None) -> WebhookReply:
        """Queue a round for ``project`` (START_TRAINING and the legacy ``/train``)."""
        if project is None:
            raise BackendError("START_TRAINING names no project", fix='send "project": {"id": <id>}')
        ticket = self.dispatcher.queue_round(project, trigger="start_training", request_id=request_id)
        body = {"status": ticket.status, "action": "START_TRAINING", "project": project, "task_id": ticket.task_id}
        return WebhookReply(201, body, ticket.status)
