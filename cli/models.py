"""`assistant models …`: the model registry: list versions, promote one, roll back.

A promotion or rollback moves the project's ``current`` pointer in one atomic write: workers serve
the new version on their next task and the backend's ``/setup`` reports it, so Label Studio
re-predicts.

Examples:
    assistant models list --project 3
    assistant models promote mkt-p3-r0004 --project 3
    assistant models rollback --project 3
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from state.registry import Registry

__all__ = ["list_versions", "models_app", "promote", "rollback"]

models_app = typer.Typer(
    help="The model registry: versions with lineage, promotion and rollback.", no_args_is_help=True
)

_PROJECT = typer.Option("--project", "-p", min=1, help="Label Studio project id.")


def _registry() -> Registry:
    from state.registry import Registry
    from state.settings import get_settings

    settings = get_settings()
    return Registry(settings.models_dir, settings.base_model)


@models_app.command("list")
def list_versions(
    project: Annotated[int | None, typer.Option("--project", "-p", min=1, help="Only this project's versions.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """List model versions, oldest first, with their lineage and held-out metrics."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry()
    records = [registry.base_record(), *registry.list_versions(project)]
    current = registry.current(project).version if project else None
    history = registry.history(project) if project else []
    if json_output:
        typer.echo(json.dumps([{**r.model_dump(mode="json"), "current": r.version == current} for r in records]))
        return
    title = f"Model versions of project {project}" if project else "Model versions (all projects)"
    table = Table("", "version", "parent", "project", "round", "created", "mAP", "change", title=title)
    for r in records:
        table.add_row(
            "▶" if r.version == current else "",
            r.version + (" (base)" if r.is_base else ""),
            r.parent or "-",
            r.project or "-",
            r.round_id or "-",
            r.created_at[:19],
            f"{r.metrics['mAP']:.1f}" if "mAP" in r.metrics else "-",
            f"{r.metrics['delta_mAP']:+.1f}" if "delta_mAP" in r.metrics else "-",
        )
    console = Console()
    console.print(table)
    if history:
        last = history[-1]
        console.print(f"Last change: {last.event} to {last.version} (from {last.previous}) at {last.at[:19]}.")


@models_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="The registry version to put in service.")],
    project: Annotated[int, _PROJECT],
) -> None:
    """Put a version in service for a project (atomic; the previous one can be rolled back to)."""

    registry = _registry()
    before = registry.current(project).version
    record = registry.promote(project, version)
    if record.project not in (None, str(project)):
        typer.echo(f"Note: {version} was trained for project {record.project}.", err=True)
    typer.echo(
        f"Project {project}: {before} -> {record.version}. Label Studio re-predicts with it on the next request."
    )


@models_app.command("rollback")
def rollback(project: Annotated[int, _PROJECT]) -> None:
    """Return a project to the version in service before the last promotion."""

    registry = _registry()
    before = registry.current(project).version
    record = registry.rollback(project)
    typer.echo(f"Project {project}: rolled back from {before} to {record.version}.")
