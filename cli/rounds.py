"""`assistant round …`: run a fine-tuning round, see where rounds stand; `assistant beat`: automatic rounds.

Examples:
    assistant round run --project 3                   # here, with progress bars
    assistant round run --project 3 --stages stage2   # prompt tuning only (served from the feature cache)
    assistant round run --project 3 --queue           # on a train worker; follow it
    assistant round run --project 3 --no-promote      # evaluate a candidate, keep the current model
    assistant round status                            # every project: lock, new corrections, last rounds
    assistant beat                                    # the scheduler of automatic rounds (one per deployment)
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.progress import ProgressBars, progress_bars

if TYPE_CHECKING:
    from rich.console import Console

    from state.contracts import RoundResult

__all__ = ["beat", "round_app", "run", "status"]

round_app = typer.Typer(
    help="Fine-tuning rounds: learn from annotators' corrections, promote only what is not worse.",
    no_args_is_help=True,
)


def _print_result(console: Console, result: RoundResult) -> None:
    from rich.table import Table

    colour = {"promoted": "green", "kept": "yellow", "skipped": "yellow", "busy": "red"}.get(result.status, "white")
    console.print(f"[{colour}]{result.status or 'done'}[/{colour}]: {result.reason}", highlight=False)
    table = Table(title=f"Project {result.project}, round {result.round_id or '-'}", show_header=False)
    table.add_row("model in service", result.current_version)
    table.add_row("candidate", result.candidate_version or "-")
    for key in ("mAP", "current_mAP", "delta_mAP", "mAP_seen", "mAP_novel", "F1@3"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.2f}")
    for key, value in sorted(result.counts.items()):
        table.add_row(key.replace("_", " "), str(value))
    if result.report_path:
        table.add_row("report", result.report_path)
    console.print(table)


@round_app.command("run")
def run(
    project: Annotated[int, typer.Option("--project", "-p", min=1, help="Label Studio project id.")],
    stages: Annotated[
        str | None, typer.Option("--stages", help="Comma-separated: stage1, stage2 (default: settings).")
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Promote a candidate that is not worse, or only evaluate it.")
    ] = True,
    queue: Annotated[
        bool, typer.Option("--queue", help="Run it on a train worker instead of in this process.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="With --queue: follow the round to its end.")] = True,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="With --queue: stop following after this.")] = 4
    * 3600.0,
) -> None:
    """Run one fine-tuning round: export corrections, train, evaluate against the model in service, promote or keep."""
    from rich.console import Console

    from state.contracts import RoundRequest
    from state.settings import get_settings
    from workers.beat import locks_for

    console = Console()
    chosen = [s.strip() for s in (stages or "").split(",") if s.strip()]
    if any(s not in ("stage1", "stage2") for s in chosen):
        console.print(f"[red]Error:[/red] unknown stages {chosen}. Fix: use stage1, stage2 or both.", highlight=False)
        raise typer.Exit(code=1)
    settings = get_settings()
    locks = locks_for(settings)
    request = RoundRequest(project=project, trigger="manual", stages=chosen, promote=promote)
    try:
        result = (
            _queued(console, settings, locks, request, wait, timeout)
            if queue
            else _local(console, settings, locks, request)
        )
    finally:
        locks.client.close()
    if result is None:
        return
    _print_result(console, result)
    if result.status == "busy":
        raise typer.Exit(code=1)


def _local(console: Console, settings: Any, locks: Any, request: Any) -> RoundResult:
    from state.locks import cli_holder
    from workers.rounds import run_project_round

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    with progress_bars(console) as progress:
        return run_project_round(settings, request, holder=cli_holder(), locks=locks, progress=ProgressBars(progress))


def _queued(
    console: Console, settings: Any, locks: Any, request: Any, wait: bool, timeout: float
) -> RoundResult | None:
    from celery.result import AsyncResult

    from state.contracts import RoundResult
    from workers.beat import queue_round
    from workers.celery_app import make_celery

    app = make_celery(settings, include=())
    ticket = queue_round(
        app, locks, request.project, trigger="manual", queue_ttl_s=settings.round_queue_ttl_s, stages=request.stages
    )
    if ticket.status != "queued":
        console.print(f"A round is {ticket.status.replace('_', ' ')} for project {request.project} ({ticket.task_id}).")
        if not wait:
            return None
    else:
        console.print(f"Queued round {ticket.task_id} on the train queue.")
        if not wait:
            return None
    handle = AsyncResult(ticket.task_id, app=app)
    deadline = time.monotonic() + timeout
    with console.status(f"Waiting for round {ticket.task_id} …") as spinner:
        while not handle.ready():
            if time.monotonic() > deadline:
                console.print(f"[yellow]Stopped following after {timeout:.0f} s;[/yellow] the round goes on.")
                return None
            spinner.update(f"Round {ticket.task_id}: {handle.state.lower()} …")
            time.sleep(2.0)
    if not handle.successful():
        console.print(f"[red]The round failed:[/red] {str(handle.result)[:500]}", highlight=False)
        raise typer.Exit(code=1)
    return RoundResult.model_validate(handle.result)


@round_app.command("status")
def status(
    project: Annotated[int | None, typer.Option("--project", "-p", min=1, help="One project (default: all).")] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="Rounds shown per project.")] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Where rounds stand: the model in service, the lock, new corrections against the threshold, the last rounds.

    Failed rounds are listed too (status ``failed``), with their reason and the version they tried to make.
    """
    from rich.console import Console
    from rich.table import Table

    from state.ledger import open_ledger
    from state.registry import Registry
    from state.round_log import read_round_log
    from state.settings import get_settings
    from workers.beat import locks_for

    settings = get_settings()
    registry = Registry(settings.models_dir, settings.base_model)
    ledger = open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
    projects = [project] if project else sorted(set(ledger.projects()) | set(_registry_projects(settings)))
    locks = locks_for(settings)
    report: list[dict[str, Any]] = []
    try:
        for p in projects:
            holder = _safe(lambda p=p: locks.holder(p))
            report.append(
                {
                    "project": p,
                    "current": registry.current(p).version,
                    "lock": holder,
                    "lock_ttl_s": _safe(lambda p=p: locks.ttl_s(p)) if holder else None,
                    "new_corrections": ledger.count_since_last_round(p),
                    "threshold": settings.round_threshold,
                    "rounds": read_round_log(settings.models_dir, p)[-last:],
                }
            )
    finally:
        ledger.close()
        locks.client.close()
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    if not report:
        console.print("No project has corrections or rounds yet.")
    for entry in report:
        lock = entry["lock"] or "free"
        if entry["lock_ttl_s"] is not None:
            lock += f" (expires in {entry['lock_ttl_s']:.0f} s)"
        console.print(
            f"[bold]Project {entry['project']}[/bold]: serving {entry['current']}; round lock {lock}; "
            f"{entry['new_corrections']} new corrections (threshold {entry['threshold'] or 'off'})",
            highlight=False,
        )
        table = Table("round", "finished", "trigger", "status", "candidate", "mAP", "change", "reason")
        for r in entry["rounds"]:
            metrics = r.get("metrics") or {}
            failed = r.get("status") == "failed"
            table.add_row(
                r.get("round_id", ""),
                str(r.get("finished_at", ""))[:19],
                r.get("trigger", ""),
                "[red]failed[/red]" if failed else r.get("status", ""),
                r.get("candidate_version") or (f"{r.get('attempted_version')} (not made)" if failed else "-"),
                f"{metrics['mAP']:.1f}" if "mAP" in metrics else "-",
                f"{metrics['delta_mAP']:+.1f}" if "delta_mAP" in metrics else "-",
                str(r.get("reason", ""))[:70],
            )
        console.print(table)
        # A failure's reason is the fix the user needs: printed whole, not cut to the column.
        for r in entry["rounds"]:
            if r.get("status") == "failed":
                console.print(
                    f"[red]Round {r.get('round_id', '?')} failed[/red] at {str(r.get('finished_at', ''))[:19]}: "
                    f"{r.get('reason', '')}",
                    highlight=False,
                )


def _safe(fn: Any) -> Any:
    import redis

    try:
        return fn()
    except redis.RedisError:
        return "unknown (Redis unreachable)"


def _registry_projects(settings: Any) -> list[int]:
    root = settings.models_dir / "projects"
    return [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []


def beat(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """Run the scheduler of automatic rounds (correction threshold and cron schedule); one per deployment."""
    from state.schedule import beat_schedule
    from state.settings import get_settings
    from workers.celery_app import make_celery

    settings = get_settings()
    try:
        entries = beat_schedule(settings)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if not entries:
        typer.echo(
            "Error: no automatic round is configured. Fix: set ASSISTANT_ROUND_THRESHOLD (> 0) with "
            "ASSISTANT_ROUND_CHECK_INTERVAL_S, or ASSISTANT_ROUND_SCHEDULE (a cron line).",
            err=True,
        )
        raise typer.Exit(code=1)
    settings.home.mkdir(parents=True, exist_ok=True)
    app = make_celery(settings, include=())
    app.start(["beat", f"--loglevel={loglevel.upper()}", f"--schedule={settings.home / 'celerybeat-schedule'}"])
