"""The ``assistant_info`` broadcast command: what each worker serves and with which settings.

Celery's own ``inspect stats`` and ``active_queues`` say which workers are online and on which
queues; they cannot say which base model, registry and Label Studio a worker was started with.
A worker started from another shell (another ``.env``, another ``ASSISTANT_HOME``) answers every
broadcast and still serves other model versions, or reads a registry nobody promotes into, which
is a hard fault to see. ``assistant doctor`` and ``assistant status`` broadcast this command
(:func:`worker_info`) and compare the answers with their own settings.

A worker imports this module through ``DEFAULT_INCLUDE``; registering the command is the only
effect of the import (Celery's ``Panel`` keeps a name → handler table). Light: no torch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from state.model_info import is_demo_model
from state.registry import Registry
from workers.celery_app import settings_of

__all__ = ["INFO_COMMAND", "describe_worker", "worker_info"]

logger = logging.getLogger(__name__)

#: The broadcast command's name.
INFO_COMMAND = "assistant_info"


def describe_worker(app: Celery) -> dict[str, Any]:
    """What a worker of ``app`` serves: its settings' home, registry, base model, device, Label Studio."""
    settings = settings_of(app)
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "home": str(settings.home),
        "models_dir": str(settings.models_dir),
        "base_model": settings.base_model,
        "base_version": None,
        "demo_model": is_demo_model(settings.base_model),
        "device": settings.device,
        "label_studio_url": settings.label_studio_url,
        "env_file": None if settings.env_file is None else str(settings.env_file),
    }
    try:
        info["base_version"] = Registry(settings.models_dir, settings.base_model).base_version()
    except Exception as exc:  # an unreadable base model is worth reporting, not a failed broadcast
        info["error"] = str(exc)
    return info


@inspect_command(name=INFO_COMMAND)  # type: ignore[untyped-decorator]
def _assistant_info(state: Any, **_: Any) -> dict[str, Any]:
    return describe_worker(state.app)


def worker_info(app: Celery, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
    """Node name → :func:`describe_worker` of every worker that answers within ``timeout`` seconds.

    Workers started before this command existed do not answer it; they still answer ``stats``.
    """
    replies: list[dict[str, Any]] = app.control.broadcast(INFO_COMMAND, reply=True, timeout=timeout) or []
    found: dict[str, dict[str, Any]] = {}
    for reply in replies:
        for name, info in reply.items():
            if isinstance(info, dict):
                found[str(name)] = info
    return found
