"""`assistant effort`: what pre-annotation saved annotators in a project, per tag and per model version.

Reads the effort ledger (beside the corrections ledger; ``docs/preannotation.md``): every counted
annotation compared with the prediction its annotator started from. Shows the project's edits per
task against labeling from scratch per model version, then one row per tag: how often it was
shown, kept, removed, added, its precision and recall, the work it saved, and whether the guard
stopped showing it.

Examples:
    assistant effort --project 3                      # per version, then per tag (most removed first)
    assistant effort --project 3 --model-version mkt-p3-r0002+a1b2c3d4
    assistant effort --project 3 --json               # every figure as one JSON document
    assistant effort --project 3 --plot edits.png     # edits per task against from scratch over time
    assistant effort --project 3 --count              # count what waits now, in this process

``--count`` runs the counting pass the workers run (``backends.count_effort``) here: for a
deployment whose workers cannot reach Label Studio, or to catch up at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["effort"]

_SORTS = ("removed", "shown", "precision", "saved", "tag")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _count(settings: Any, ledger: Any, project: int, console: Console) -> None:
    from backends.effort import EffortCounter
    from state.registry import Registry
    from studio.client import LabelStudioClient

    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())
    counter = EffortCounter(ledger, client, Registry(settings.models_dir, settings.base_model), settings)
    with console.status(f"counting {counter.pending(project)} ledger rows of project {project}"):
        report = counter.run(project)
    refit = report.upkeep.refit
    console.print(
        f"Counted {report.counted} annotations ({report.deleted} deleted, skipped {report.skipped or 'none'})"
        + (f"; refit {refit.id} {refit.status}" if refit else "")
        + (f"; {len(report.upkeep.events)} guard events" if report.upkeep.events else ""),
        highlight=False,
    )


def effort(
    project: Annotated[int, typer.Option("--project", "-p", help="Label Studio project id.")],
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Only annotations of predictions by this model version.")
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help=f"Tag order: {', '.join(_SORTS)}.")] = "removed",
    limit: Annotated[int, typer.Option("--limit", min=0, help="Tags shown (0: all).")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the edits-over-time plot (PNG) here.")] = None,
    count: Annotated[bool, typer.Option("--count", help="Count the annotations waiting, in this process.")] = False,
) -> None:
    """Show what pre-annotation saved annotators in a project: per model version and per tag."""
    from rich.console import Console

    from state.ledger import open_ledger
    from state.registry import Registry
    from state.settings import get_settings

    if sort not in _SORTS:
        typer.echo(f"Error: unknown --sort {sort!r}. Fix: use one of {', '.join(_SORTS)}", err=True)
        raise typer.Exit(code=2)
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad ASSISTANT_* value
        typer.echo(f"Error: invalid settings: {exc}", err=True)
        raise typer.Exit(code=1) from None
    console = Console(stderr=json_output)
    ledger = open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
    try:
        if count:
            _count(settings, ledger, project, console)
        try:
            checkpoint: str | None = Registry(settings.models_dir, settings.base_model).current(project).version
        except Exception:  # the registry may be unreadable; the ledger still answers
            checkpoint = None
        report = _report(ledger, settings, project, checkpoint, model_version)
        if plot is not None:
            report["plot"] = _plot(ledger, project, plot)
    finally:
        ledger.close()
    if json_output:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _render(console, report, sort, limit)


def _report(ledger: Any, settings: Any, project: int, checkpoint: str | None, model_version: str | None) -> Any:
    from state.effort_summary import project_effort, tag_figures

    report: dict[str, Any] = {"project": project, "model_in_service": checkpoint}
    report.update(project_effort(ledger, project, checkpoint, settings.edit_costs(project)))
    if model_version is not None:
        tripped = {t for t, v in report["tags"].items() if v["guard"]}
        totals = ledger.effort.tag_totals(project, model_version=model_version)
        report["model_version"] = model_version
        report["tags"] = tag_figures(totals, settings.edit_costs(project), tripped)
    report["guard_events"] = [e.to_json() for e in ledger.effort.guard_events(project)][-20:]
    return report


def _plot(ledger: Any, project: int, path: Path) -> str | None:
    from assistant.plots import plot_edits_over_time
    from state.effort_summary import edits_series

    edits, scratch, versions = edits_series(ledger.effort, project)
    if not edits:
        return None
    return str(plot_edits_over_time(edits, scratch, versions, path, title=f"Project {project}: edits per task"))


def _render(console: Console, report: dict[str, Any], sort: str, limit: int) -> None:
    from rich.table import Table

    counting = report["counting"]
    costs = report["costs"]
    console.print(
        f"[bold]Project {report['project']}[/bold]: model in service {report['model_in_service'] or '-'}; "
        f"edit costs add {costs['add']:g}, remove {costs['remove']:g} (tags shown from p = {costs['break_even']:.2f}); "
        f"{counting['counted']} annotation events counted, {counting['pending']} waiting",
        highlight=False,
    )
    if counting["error"]:
        console.print(f"[red]Counting failed[/red] ({counting['failures']} in a row): {counting['error']}")
    note = (report.get("calibration") or {}).get("note")
    if note:
        console.print(f"Calibration: {note}", highlight=False)
    versions = Table(
        "model version", "tasks", "edits / task", "from scratch", "ratio", "saved", "precision", "recall",
        "costlier", title="Per model version", title_justify="left",
    )  # fmt: skip
    for v in [*report["versions"], {"model_version": "all", **report["totals"]}]:
        versions.add_row(
            v["model_version"],
            str(v["tasks"]),
            "-" if v["edits_per_task"] is None else f"{v['edits_per_task']:.2f}",
            "-" if v["scratch_per_task"] is None else f"{v['scratch_per_task']:.2f}",
            "-" if v["ratio"] is None else f"{v['ratio']:.2f}x",
            "-" if v["saved_share"] is None else f"{v['saved_share']:+.0%}",
            _pct(v["precision"]),
            _pct(v["recall"]),
            _pct(v["costlier_share"]),
        )
    console.print(versions)
    tags = list(report.get("tags", {}).items())
    keys = {
        "removed": lambda kv: (-kv[1]["removed"], kv[0]),
        "shown": lambda kv: (-(kv[1]["kept"] + kv[1]["removed"]), kv[0]),
        "precision": lambda kv: (2.0 if kv[1]["precision"] is None else kv[1]["precision"], kv[0]),
        "saved": lambda kv: (kv[1]["saved"], kv[0]),
        "tag": lambda kv: kv[0],
    }
    tags.sort(key=keys[sort])
    title = "Per tag" + (f" ({report['model_version']})" if report.get("model_version") else " (all model versions)")
    table = Table(
        "tag", "shown", "kept", "removed", "added", "precision", "recall", "saved", "guard", title=title,
        title_justify="left",
    )  # fmt: skip
    for tag, t in tags[: limit or None]:
        table.add_row(
            tag + (" [dim](novel)[/dim]" if t["novel"] else ""),
            str(t["kept"] + t["removed"]),
            str(t["kept"]),
            str(t["removed"]),
            str(t["added"]),
            _pct(t["precision"]),
            _pct(t["recall"]),
            f"{t['saved']:+g}",
            "[red]tripped[/red]" if t["guard"] else "-",
        )
    console.print(table)
    if limit and len(tags) > limit:
        console.print(f"{len(tags) - limit} more tags: --limit 0 shows all.")
    for event in report["guard_events"][-5:]:
        console.print(f"guard {event['at'][:19]}: {event['tag']}: {event['reason']}", highlight=False)
    if report.get("plot"):
        console.print(f"Plot: {report['plot']}")
