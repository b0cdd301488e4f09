"""`assistant worker`: run a Celery worker for the model tasks.

The worker's parent process imports the task modules (and so torch) but never runs a torch
operation: with the prefork pool, torch work in the parent before the fork deadlocks the children
(docs/workers.md, "torch and prefork"). Models load lazily in the process that runs the task (workers/runtime.py).

Metrics: with ``--metrics-port`` (or ``ASSISTANT_WORKER_METRICS_PORT``) the worker's main process
serves Prometheus metrics for all its pool processes (state/metrics.py); with the prefork pool
the command first switches prometheus_client to its multiprocess mode, in a private directory
removed when the worker stops.

Examples:
    assistant worker                                  # CPU box: solo pool, both queues
    assistant worker --queues predict --device cuda:0 # one GPU, predictions only
    assistant worker --pool prefork --concurrency 2   # two processes (time limits enforced)
    assistant worker --metrics-port 9808 --json-logs  # what the compose stack runs
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["Pool", "worker"]

KNOWN_QUEUES = ("predict", "train")
# prometheus_client picks its value storage when it is first imported, from this variable.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Pool(enum.StrEnum):
    """Celery execution pools offered by the command."""

    solo = "solo"
    prefork = "prefork"
    threads = "threads"


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
    json_logs: Annotated[
        bool,
        typer.Option("--json-logs", help="One JSON object per line, with task and request ids (default: settings)."),
    ] = False,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="Node name, e.g. gpu0@%h (default: celery@<host>).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics of all pool processes on this port; 0: none "
            "(default: ASSISTANT_WORKER_METRICS_PORT).",
        ),
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
    from state.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad ASSISTANT_* value
        typer.echo(f"Error: invalid settings: {exc}", err=True)
        raise typer.Exit(code=1) from None
    port = settings.worker_metrics_port if metrics_port is None else metrics_port

    from state.logs import configure_logging

    configure_logging(loglevel.upper(), json_lines=json_logs or settings.log_format == "json")

    from celery.signals import setup_logging

    from workers.celery_app import DEFAULT_INCLUDE, make_celery

    updates: dict[str, Any] = {}
    if device:
        updates["device"] = device
    if pool is Pool.prefork and concurrency > 1 and not settings.torch_threads:
        # One torch thread pool per process: N processes x all cores each would oversubscribe.
        updates["torch_threads"] = max(1, (os.cpu_count() or 1) // concurrency)
    settings = settings.model_copy(update=updates)

    # Logging is configured above; a receiver on this signal stops Celery from replacing it.
    setup_logging.connect(_keep_logging, weak=False)
    # The CLI is the composition root: it adds the backend's light tasks (convert a finished
    # prediction and post it to Label Studio; count annotators' edits), which `workers` may not
    # import itself.
    app = make_celery(settings, include=(*DEFAULT_INCLUDE, "backends.tasks", "backends.effort"))
    argv = ["worker", f"--queues={','.join(chosen)}", f"--pool={pool.value}", f"--concurrency={concurrency}"]
    argv.append(f"--loglevel={loglevel.upper()}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    logging.getLogger(__name__).info(
        "starting worker: queues %s, pool %s x%d, device %s", chosen, pool.value, concurrency, settings.device
    )
    # Only the prefork pool runs tasks outside this process, so only it needs the multiprocess mode.
    with _metrics_exporter(port, settings.worker_metrics_host, multiprocess=pool is Pool.prefork):
        app.worker_main(argv)


def _keep_logging(**_: Any) -> None:
    """Receiver of Celery's ``setup_logging``: the command configured logging already."""


def _multiprocess_metrics_dir() -> Path:
    """A private directory for prometheus_client's multiprocess mode, set before its first import."""
    if "prometheus_client" in sys.modules:
        # Its value storage was chosen at import: the children's samples would never reach the
        # exporter. Only an embedding program (a test runner) can get here.
        typer.echo(
            "Error: prometheus_client was imported before the worker could enable its multiprocess mode. "
            "Fix: start the worker as its own process (`assistant worker`), or use --metrics-port 0.",
            err=True,
        )
        raise typer.Exit(code=1)
    path = Path(tempfile.mkdtemp(prefix="assistant-worker-metrics-"))
    os.environ[_MULTIPROC_ENV] = str(path)
    return path


@contextlib.contextmanager
def _metrics_exporter(port: int, host: str, *, multiprocess: bool) -> Iterator[None]:
    """Serve the metrics while the worker runs (none when ``port`` is 0); clean up afterwards."""
    server, multiprocess_dir = None, None
    try:
        if port:
            # Before anything imports prometheus_client (the task modules do, through state.metrics).
            multiprocess_dir = _multiprocess_metrics_dir() if multiprocess else None
            from state.metrics import connect_task_signals, start_exporter

            connect_task_signals()
            try:
                server = start_exporter(port, host, multiprocess_dir=multiprocess_dir)
            except OSError as exc:
                typer.echo(
                    f"Error: cannot serve metrics on {host}:{port} ({exc}). "
                    "Fix: give each worker on this host its own --metrics-port (or 0 for none).",
                    err=True,
                )
                raise typer.Exit(code=1) from None
            where = f" (pool processes' samples in {multiprocess_dir})" if multiprocess_dir else ""
            logging.getLogger(__name__).info("metrics on http://%s:%d/metrics%s", host, port, where)
        yield
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if multiprocess_dir is not None:
            shutil.rmtree(multiprocess_dir, ignore_errors=True)
