"""`assistant preannotate`: pre-annotate a whole Label Studio project through the workers.

Tasks that already have a prediction for the current version (checkpoint + labeling-config
fingerprint, what the backend's /setup answers) are skipped, so running it twice posts nothing
new, and an interrupted run resumes where it stopped. After the project's calibration was refit
from its annotations, an unlabeled task whose prediction an older calibration chose is predicted
again and its prediction replaced in place (docs/preannotation.md). Needs running workers (`assistant worker`)
that include the publishing task.

While it follows the run, Redis may go away: the command waits for it, and when Redis comes back
without its data (restarted without persistence), it queues the lost chunks again and says so in
the summary. With `--no-wait` nobody watches: run the command again, it queues what is missing.

Examples:
    assistant preannotate --project 3                  # every task without a prediction yet
    assistant preannotate --project 3 --unlabeled      # only tasks nobody annotated
    assistant preannotate --project 3 --model-version mkt-3f2a9c1b0d4e --no-wait
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the heavy-ish imports happen inside the command (fast `assistant --help`)
    from rich.console import Console

    from backends.bulk import BulkPlan, BulkProgress, BulkRun
    from backends.dispatch import CeleryDispatcher
    from backends.settings import BackendSettings
    from state.ledger import Ledger
    from state.registry import Registry
    from studio.client import LabelStudioClient

__all__ = ["preannotate"]


def preannotate(
    project: Annotated[int, typer.Option("--project", "-p", min=1, help="Label Studio project id.")],
    unlabeled: Annotated[
        bool, typer.Option("--unlabeled/--all", help="Only tasks without annotations, or every task (default).")
    ] = False,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="A registry version to predict with (default: the project's current)."),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", min=1, help="Images per worker message (default: settings).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run to the end, or only queue it.")] = True,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=1, help="Stop following after this many seconds.")
    ] = None,
) -> None:
    """Pre-annotate a project: predict every task lacking a prediction for the current model version."""
    from rich.console import Console

    from backends.bulk import BulkRun, plan_preannotation

    console = Console()
    settings, dispatcher, client, registry = _services()
    ledger = _ledger(console, settings)
    try:
        plan = plan_preannotation(
            client,
            registry,
            dispatcher.state,
            project=project,
            unlabeled_only=unlabeled,
            model_version=model_version,
            chunk_size=chunk_size or settings.predict_chunk_size,
            store=None if ledger is None else ledger.effort,
        )
    finally:
        if ledger is not None:
            ledger.close()
    _print_plan(console, plan)
    if plan.job is None:
        _print_summary(console, plan, None)
        return
    run = BulkRun(dispatcher, plan)
    run.start()
    if not wait:
        console.print(f"Queued {plan.queued} tasks in {len(plan.job.chunks)} chunks ({plan.job.job_id}).")
        return
    progress = _follow(console, run, timeout)
    _print_summary(console, plan, progress)


def _services() -> tuple[BackendSettings, CeleryDispatcher, LabelStudioClient, Registry]:
    from backends.dispatch import CeleryDispatcher
    from backends.settings import get_backend_settings
    from backends.state import RedisState
    from state.locks import redis_url
    from state.registry import Registry
    from studio.client import LabelStudioClient
    from workers.celery_app import make_celery

    settings = get_backend_settings()
    state = RedisState.from_url(
        redis_url(settings.broker_url, settings.result_backend),
        settings.redis_key_prefix,
        timeout_s=5.0,
        retries=3,
        claim_ttl_s=settings.result_expires_s,
        inflight_ttl_s=settings.inflight_ttl_s,
    )
    dispatcher = CeleryDispatcher(
        make_celery(settings, include=()),
        state,
        predict_queue=settings.predict_queue,
        publish_queue=settings.publish_queue,
        train_queue=settings.train_queue,
    )
    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())
    return settings, dispatcher, client, Registry(settings.models_dir, settings.base_model)


def _ledger(console: Console, settings: BackendSettings) -> Ledger | None:
    """The effort ledger (the project's calibration refits), or None with a note when it cannot be opened."""
    from state.ledger import open_ledger

    try:
        return open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
    except Exception as exc:  # without it, any prediction for the version counts (nothing is replaced)
        console.print(
            f"[yellow]Note:[/yellow] the effort ledger cannot be opened ({type(exc).__name__}: {exc}); predictions "
            "made before the project's last calibration refit are kept. Fix: check ASSISTANT_LEDGER_URL.",
            highlight=False,
        )
        return None


def _print_plan(console: Console, plan: BulkPlan) -> None:
    stale = f" ({len(plan.stale)} of them predicted before refit {plan.calibration}: replaced)" if plan.stale else ""
    console.print(
        f"Project {plan.project}, model version [bold]{plan.model_version}[/bold]: {plan.total} tasks; "
        f"{len(plan.already_predicted)} already predicted, {len(plan.in_flight)} in flight elsewhere, "
        f"{len(plan.failures)} without a usable image; {plan.queued} to predict{stale}.",
        highlight=False,
    )


def _follow(console: Console, run: BulkRun, timeout: float | None) -> BulkProgress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("Pre-annotating", total=run.progress.tasks)

        def show(p: BulkProgress) -> None:
            state = "Pre-annotating (Redis unreachable, waiting)" if p.broker_down else "Pre-annotating"
            bar.update(task, completed=p.done_tasks, description=state)

        progress = run.wait(timeout_s=timeout, on_progress=show)
    if not progress.finished:
        left = progress.chunks - progress.done_chunks
        console.print(
            f"[yellow]Stopped following after {timeout or 0:.0f} s, {left} chunks still queued or running;[/yellow] "
            "they finish on their own. Run the command again later: it only queues what is still missing.",
            highlight=False,
        )
    return progress


def _print_summary(console: Console, plan: BulkPlan, progress: BulkProgress | None) -> None:
    from rich.table import Table

    failed: Counter[str] = Counter(f.reason for f in plan.failures)
    posted = replaced = skipped = 0
    examples: dict[str, str] = {f.reason: f.message for f in plan.failures}
    if progress is not None:
        failed.update(progress.failed)
        posted, replaced, skipped = progress.posted, progress.replaced, progress.skipped
        examples.update({str(f["reason"]): str(f["message"]) for f in progress.failures})
    table = Table(title=f"Pre-annotation of project {plan.project}", show_header=False)
    table.add_row("Predicted", str(posted))
    if replaced or plan.stale:
        table.add_row("Replaced: predicted before the last calibration refit", str(replaced))
    table.add_row("Skipped: already predicted", str(len(plan.already_predicted) + skipped))
    table.add_row("Skipped: in flight (another run)", str(len(plan.in_flight)))
    table.add_row("Failed", str(sum(failed.values())))
    for reason, count in failed.most_common():
        table.add_row(f"  {reason}", f"{count}  e.g. {examples.get(reason, '')[:100]}")
    if progress is not None and progress.redis_losses:
        table.add_row(
            "Queued again: Redis lost them",
            f"{progress.requeued_tasks} tasks in {progress.requeued_chunks} chunks "
            f"(Redis lost its data {progress.redis_losses}x during the run)",
        )
    console.print(table)
