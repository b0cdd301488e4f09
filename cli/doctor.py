"""`assistant doctor`: find what keeps the assistant from working, in order, each with its fix.

It checks, in this order (``cli/doctor_checks.py``; a project's in ``cli/doctor_project.py``):
the settings it read and from which env file; Redis; the workers online per queue and the base
model each serves; Label Studio and the API key; and with ``--project``: the labeling config (and
what the model ignores), the model connection and the project's webhook (without it, annotations
never reach the corrections ledger), one image as a worker reads it; then the registry (writable),
the model serving (a real one, or the offline demo model) and its calibration state.

Examples:
    assistant doctor                        # the stack: settings, Redis, workers, Label Studio, model
    assistant doctor --project 3            # and project 3: config, webhook, an image
    assistant doctor --project 3 --json     # the same for scripts

Exit code 1 when a check fails (``warn`` does not fail), 0 otherwise.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from cli.doctor_result import Check

__all__ = ["doctor"]

_MARKS = {
    "ok": "[green]ok  [/green]",
    "warn": "[yellow]WARN[/yellow]",
    "fail": "[red]FAIL[/red]",
    "skip": "[dim]skip[/dim]",
}


def doctor(
    project: Annotated[
        int | None, typer.Option("--project", "-p", min=1, help="Also check this Label Studio project.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds for Redis, the workers and each Label Studio call.")
    ] = 3.0,
) -> None:
    """Check the stack (and a project) in order and say what is wrong and how to fix it."""
    from cli.doctor_checks import Doctor
    from cli.doctor_result import Check

    checks: list[Check]
    try:
        from backends.settings import get_backend_settings

        settings = get_backend_settings()
    except ValueError as exc:  # pydantic's ValidationError or a missing ASSISTANT_ENV_FILE
        checks = [Check("settings", "settings", "fail", f"invalid settings: {exc}", fix="correct the value named")]
    else:
        checks = Doctor(settings, project, timeout=timeout).run()
    ok = all(c.status != "fail" for c in checks)
    if json_output:
        document: dict[str, Any] = {"ok": ok, "project": project, "checks": [c.to_json() for c in checks]}
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        from rich.console import Console

        _render(Console(), checks, ok)
    if not ok:
        raise typer.Exit(code=1)


def _render(console: Console, checks: list[Check], ok: bool) -> None:
    for check in checks:
        console.print(f"{_MARKS[check.status]} [bold]{check.title}[/bold]: {check.detail}", highlight=False)
        if check.fix and check.status in ("warn", "fail"):
            console.print(f"      Fix: {check.fix}", highlight=False)
    failed = [c.title for c in checks if c.status == "fail"]
    if ok:
        console.print("Nothing failed." + ("" if any(c.status == "warn" for c in checks) else " All good."))
    else:
        console.print(f"[red]{len(failed)} check(s) failed[/red]: {', '.join(failed)}.", highlight=False)
