"""`assistant worker`: run a Celery worker for the model tasks.

The worker's parent process imports the task modules (and so torch) but never runs a torch
operation: with the prefork pool, torch work in the parent before the fork deadlocks the children
(environment.md §2). Models load lazily in the process that runs the task (workers/runtime.py).

Examples:
    assistant worker                                  # CPU box: solo pool, both queues
    assistant worker --queues predict --device cuda:0 # one GPU, predictions only
    assistant worker --pool prefork --concurrency 2   # two processes (time limits enforced)
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
from typing import Annotated, Any

import typer

__all__ = ["JsonFormatter", "Pool", "worker"]

KNOWN_QUEUES = ("predict", "train")


class Pool(enum.StrEnum):
    """Celery execution pools offered by the command."""

    solo = "solo"
    prefork = "prefork"
    threads = "threads"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _configure_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated queues to consume: predict, train.")
    ] = "predict,train",
    device: Annotated[
        str | None, typer.Option("--device", help="Where models run: auto, cpu, cuda, cuda:1 (default: settings).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Processes or threads.")] = 1,
    pool: Annotated[
        Pool | None,
        typer.Option(
            "--pool",
            help="solo: one task at a time in this process (the default for one process); prefork: child "
            "processes, needed for time limits and for requeueing a task whose process died (the default "
            "with --concurrency above 1); threads: shares one model between threads.",
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log one JSON object per line.")] = False,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="Node name, e.g. gpu0@%h (default: celery@<host>).")
    ] = None,
) -> None:
    """Start a worker for the model tasks (pre-annotation, embeddings, training rounds)."""
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(KNOWN_QUEUES))
    if not chosen or unknown:
        typer.echo(f"Error: unknown queue(s) {unknown or chosen}. Fix: use {', '.join(KNOWN_QUEUES)}.", err=True)
        raise typer.Exit(code=1)
    pool = pool or (Pool.prefork if concurrency > 1 else Pool.solo)
    if pool is Pool.solo and concurrency > 1:
        typer.echo("Error: the solo pool runs one task at a time. Fix: add --pool prefork or --pool threads.", err=True)
        raise typer.Exit(code=1)
    _configure_logging(loglevel, json_logs)

    from celery.signals import setup_logging

    from workers.celery_app import DEFAULT_INCLUDE, make_celery
    from workers.settings import get_settings

    settings = get_settings()
    updates: dict[str, Any] = {}
    if device:
        updates["device"] = device
    if pool is Pool.prefork and concurrency > 1 and not settings.torch_threads:
        # One torch thread pool per process: N processes x all cores each would oversubscribe.
        updates["torch_threads"] = max(1, (os.cpu_count() or 1) // concurrency)
    settings = settings.model_copy(update=updates)

    # Logging is configured above; a receiver on this signal stops Celery from replacing it.
    setup_logging.connect(_keep_logging, weak=False)
    # The CLI is the composition root: it adds the backend's light publish task (converts a
    # finished prediction and posts it to Label Studio), which `workers` may not import itself.
    app = make_celery(settings, include=(*DEFAULT_INCLUDE, "backends.tasks"))
    argv = ["worker", f"--queues={','.join(chosen)}", f"--pool={pool.value}", f"--concurrency={concurrency}"]
    argv.append(f"--loglevel={loglevel.upper()}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    logging.getLogger(__name__).info(
        "starting worker: queues %s, pool %s x%d, device %s", chosen, pool.value, concurrency, settings.device
    )
    app.worker_main(argv)


def _keep_logging(**_: Any) -> None:
    """Receiver of Celery's ``setup_logging``: the command configured logging already."""
