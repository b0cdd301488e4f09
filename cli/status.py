"""`assistant status`: the running system at a glance: queues, workers, model versions, last rounds, saving.

It reads what every process shares: the broker's Redis (queue depth, and the workers, which
answer a Celery broadcast), the model registry (the version serving each project), the round log,
the corrections ledger and the effort ledger beside it: per project, the annotators' edits per
task against labeling from scratch, the precision and recall of the shown tags, the project's
calibration, the tags the guard stopped showing, and the annotations still to count. A failure
in the background (counting stopped because Label Studio is unreachable, a refit that failed) is
listed under "alerts". It never imports torch, so it answers in about a second. The per-tag
figures: ``assistant effort``.

Examples:
    assistant status                                 # tables
    assistant status --json                          # the same as one JSON document
    docker compose exec backend assistant status     # inside the compose stack

Exit code 1 when the broker's Redis cannot be reached (queues and workers are then unknown), 0
otherwise, also when no worker is online (the table says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from state.redact import redact_url

if TYPE_CHECKING:
    from rich.console import Console

    from state.settings import Settings

__all__ = ["collect", "status"]

_DIST = "labeling-assistant"


def _version() -> str:
    try:
        return metadata.version(_DIST)
    except metadata.PackageNotFoundError:
        return "unknown"


def _last_round(models_dir: Path, project: int) -> dict[str, Any] | None:
    """The last complete line of the project's round log (:mod:`state.round_log`), or None."""
    from state.round_log import read_round_log

    rounds = read_round_log(models_dir, project)
    return rounds[-1] if rounds else None


def _registry_projects(models_dir: Path) -> list[int]:
    root = models_dir / "projects"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def _workers(settings: Settings, timeout: float) -> list[dict[str, Any]]:
    """The workers that answer a broadcast within ``timeout`` seconds (two broadcasts)."""
    from workers.celery_app import make_celery

    app = make_celery(settings, include=())
    try:
        inspect = app.control.inspect(timeout=timeout)
        stats: dict[str, Any] = inspect.stats() or {}
        queues: dict[str, Any] = inspect.active_queues() or {}
    finally:
        app.close()
    found = []
    for name in sorted(set(stats) | set(queues)):
        info = stats.get(name) or {}
        pool = info.get("pool") or {}
        implementation = str(pool.get("implementation", "")).rsplit(":", 1)[0].rsplit(".", 1)[-1]
        found.append(
            {
                "name": name,
                "queues": sorted(str(q.get("name")) for q in queues.get(name) or []),
                "pool": implementation or None,
                "concurrency": pool.get("max-concurrency"),
                "tasks_done": sum(int(v) for v in (info.get("total") or {}).values()),
                "uptime_s": info.get("uptime"),
            }
        )
    return found


def _broker(settings: Settings, report: dict[str, Any], timeout: float) -> None:
    from state.contracts import QUEUE_PREDICT, QUEUE_TRAIN
    from state.metrics import broker_redis, queue_depths, scheduled_unacked

    client = broker_redis(settings.broker_url, timeout_s=timeout)
    if client is None:
        report["errors"].append("the broker is not Redis: queue depth is not available")
        report["workers"] = _workers(settings, timeout)
        return
    try:
        client.ping()
        depths = queue_depths(client, (QUEUE_PREDICT, QUEUE_TRAIN), settings.redis_key_prefix)
        report["scheduled"] = scheduled_unacked(client, settings.redis_key_prefix) if depths.unacked else 0
    except Exception as exc:  # redis.RedisError and socket errors alike: report, do not crash
        report["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        report["errors"].append(
            f"Redis is unreachable at {redact_url(settings.broker_url)} ({type(exc).__name__}). "
            "Fix: start Redis, or point ASSISTANT_BROKER_URL at it"
        )
        return
    finally:
        client.close()
    report["redis"] = {"ok": True, "error": None}
    report["queues"] = depths.waiting
    report["unacked"] = depths.unacked
    report["workers"] = _workers(settings, timeout)
    _worker_models(settings, report, timeout)


def _worker_models(settings: Settings, report: dict[str, Any], timeout: float) -> None:
    """Add the base model each worker serves (``workers.control``): another shell's settings show here."""
    if not report["workers"]:
        return
    from workers.celery_app import make_celery
    from workers.control import worker_info

    app = make_celery(settings, include=())
    try:
        infos = worker_info(app, timeout=timeout)
    finally:
        app.close()
    for worker in report["workers"]:
        info = infos.get(worker["name"]) or {}
        worker["base_model"] = info.get("base_version")
        worker["demo_model"] = info.get("demo_model")
        worker["home"] = info.get("home")


def _alerts(project: int, effort: dict[str, Any]) -> list[str]:
    """What went wrong in the background for a project, for people."""
    alerts = []
    counting = effort["counting"]
    if counting["error"]:
        alerts.append(
            f"project {project}: {counting['pending']} annotation events wait to be counted; counting failed "
            f"{counting['failures']} time(s) in a row, last at {str(counting['error_at'])[:19]}: {counting['error']}. "
            "Fix: check that the workers reach Label Studio (ASSISTANT_LABEL_STUDIO_URL and _API_KEY); nothing "
            "is lost, the next pass counts them"
        )
    refit = (effort.get("calibration") or {}).get("refit") or {}
    if refit.get("status") == "failed":
        alerts.append(
            f"project {project}: the calibration refit {refit['id']} failed at {str(refit['at'])[:19]}: "
            f"{refit.get('error')}. The previous calibration keeps serving; the next refit is tried after more "
            "annotations"
        )
    return alerts


def _effort(ledger: Any, settings: Settings, project: int, checkpoint: str | None, report: dict[str, Any]) -> Any:
    from state.effort_summary import project_effort

    try:
        effort = project_effort(ledger, project, checkpoint, settings.edit_costs(project))
    except Exception as exc:  # the effort tables may be unreadable; the rest still shows
        report["errors"].append(f"the effort ledger of project {project} cannot be read: {exc}")
        return None
    report["alerts"].extend(_alerts(project, effort))
    return effort


def _models(settings: Settings, report: dict[str, Any]) -> None:
    from state.ledger import open_ledger
    from state.model_info import is_demo_model
    from state.registry import Registry

    registry = Registry(settings.models_dir, settings.base_model)
    try:
        report["base_model"] = registry.base_version()
    except Exception as exc:  # a missing base checkpoint must not hide the rest
        report["errors"].append(f"the base model cannot be read: {exc}")
    report["base_model_demo"] = is_demo_model(settings.base_model)
    ledger = None
    try:
        ledger = open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
        ledger_projects = sorted(set(ledger.projects()) | set(ledger.effort.projects()))
    except Exception as exc:  # the ledger's database may be down; the registry still answers
        report["errors"].append(f"the corrections ledger cannot be read: {exc}")
        ledger_projects = []
    try:
        for project in sorted(set(ledger_projects) | set(_registry_projects(settings.models_dir))):
            entry: dict[str, Any] = {"project": project, "model_version": None, "new_corrections": None}
            try:
                entry["model_version"] = registry.current(project).version
            except Exception as exc:
                entry["error"] = str(exc)
            if ledger is not None and project in ledger_projects:
                entry["new_corrections"] = ledger.count_since_last_round(project)
            entry["last_round"] = _last_round(settings.models_dir, project)
            if ledger is not None:
                entry["preannotation"] = _effort(ledger, settings, project, entry["model_version"], report)
            report["projects"].append(entry)
    finally:
        if ledger is not None:
            ledger.close()


def collect(settings: Settings, *, timeout: float = 1.0) -> dict[str, Any]:
    """Everything ``assistant status`` shows, as JSON-ready data.

    Args:
        settings: Broker, registry and ledger locations.
        timeout: Seconds to wait for Redis and for the workers' answers.
    """
    report: dict[str, Any] = {
        "version": _version(),
        "environment": settings.environment,
        "env_file": None if settings.env_file is None else str(settings.env_file),
        "home": str(settings.home),
        "broker": redact_url(settings.broker_url),
        "label_studio_url": settings.label_studio_url,
        "redis": {"ok": None, "error": None},
        "queues": {},
        "unacked": None,
        "scheduled": None,
        "workers": [],
        "base_model": None,
        "base_model_demo": None,
        "projects": [],
        "errors": [],
        "alerts": [],
    }
    _broker(settings, report, timeout)
    _models(settings, report)
    return report


def status(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for Redis and for the workers' answers.")
    ] = 1.0,
) -> None:
    """Show queue depth, the workers online, the model version of each project and its last round."""
    from state.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad ASSISTANT_* value
        typer.echo(f"Error: invalid settings: {exc}", err=True)
        raise typer.Exit(code=1) from None
    report = collect(settings, timeout=timeout)
    if json_output:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        from rich.console import Console

        _render(Console(), report)
    if report["redis"]["ok"] is False:
        raise typer.Exit(code=1)


def _render(console: Console, report: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(
        f"[bold]Labeling assistant {report['version']}[/bold] ({report['environment']}): broker {report['broker']}, "
        f"Label Studio {report['label_studio_url']}, home {report['home']}",
        highlight=False,
    )
    console.print(f"Settings from {report['env_file'] or 'the environment only (no .env here)'}.", highlight=False)
    for error in report["errors"]:
        console.print(f"[red]Error:[/red] {error}", highlight=False)
    for alert in report["alerts"]:
        console.print(f"[red]Alert:[/red] {alert}", highlight=False)
    if report["redis"]["ok"]:
        queues = Table("queue", "waiting", title="Queues", title_justify="left")
        for name, count in report["queues"].items():
            queues.add_row(name, str(count))
        console.print(queues)
        scheduled = report["scheduled"] or 0
        console.print(
            f"{report['unacked'] - scheduled} delivered to workers and not yet acknowledged (running or prefetched)"
            + (
                f"; {scheduled} held until a scheduled time (the backend's follow-up of a Retrieve Predictions: "
                "about a minute later it publishes what the inline wait missed, usually nothing)."
                if scheduled
                else "."
            ),
            highlight=False,
        )
        if report["workers"]:
            workers = Table(
                "worker",
                "queues",
                "pool",
                "processes",
                "tasks done",
                "up for",
                "base model",
                title="Workers online",
                title_justify="left",
            )
            for w in report["workers"]:
                uptime = f"{w['uptime_s'] / 3600:.1f} h" if isinstance(w["uptime_s"], int | float) else "-"
                workers.add_row(
                    w["name"],
                    ", ".join(w["queues"]),
                    w["pool"] or "-",
                    str(w["concurrency"] or "-"),
                    str(w["tasks_done"]),
                    uptime,
                    (w.get("base_model") or "-") + (" (demo)" if w.get("demo_model") else ""),
                )
            console.print(workers)
        else:
            console.print(
                "[yellow]No worker answered.[/yellow] Fix: start one (`assistant worker`); a solo-pool worker busy "
                "with a long task answers only when it is done.",
                highlight=False,
            )
    console.print(f"Base model (projects without a promoted version): {report['base_model'] or '-'}", highlight=False)
    if report["base_model_demo"]:
        from state.model_info import DEMO_MODEL_FIX, DEMO_MODEL_WHAT

        console.print(f"[yellow]It is {DEMO_MODEL_WHAT}.[/yellow] Fix: {DEMO_MODEL_FIX}.", highlight=False)
    if not report["projects"]:
        console.print("No project has corrections or model versions yet.")
        return
    projects = Table(
        "project",
        "model in service",
        "new corrections",
        "last round",
        "status",
        "finished",
        title="Projects",
        title_justify="left",
    )
    for p in report["projects"]:
        last = p.get("last_round") or {}
        projects.add_row(
            str(p["project"]),
            p["model_version"] or f"[red]{p.get('error', '?')}[/red]",
            "-" if p["new_corrections"] is None else str(p["new_corrections"]),
            str(last.get("round_id") or "-"),
            str(last.get("status") or "-"),
            str(last.get("finished_at") or "-")[:19],
        )
    console.print(projects)
    _render_preannotation(console, report["projects"])


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.0%}" if signed else f"{value:.0%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _both(now: dict[str, Any] | None, total: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    """``<model in service> (<all versions>)``."""
    return f"{fmt(now.get(key)) if now else '-'} ({fmt(total.get(key))})"


def _render_preannotation(console: Console, projects: list[dict[str, Any]]) -> None:
    from rich.table import Table

    rows = [p for p in projects if p.get("preannotation")]
    if not rows:
        return
    table = Table(
        "project",
        "tasks",
        "edits / task",
        "from scratch",
        "work saved",
        "precision",
        "recall",
        "costlier tasks",
        "to count",
        "calibration",
        "guard",
        title="Pre-annotation: annotators' edits against labeling from scratch (model in service; all versions)",
        title_justify="left",
    )
    for p in rows:
        effort = p["preannotation"]
        now, total = effort["in_service"], effort["totals"]
        calibration = effort.get("calibration") or {}
        kind = calibration.get("model") or "-"
        if calibration.get("in_service"):
            kind += f" + refit {calibration['in_service']}"
        if calibration.get("conservative"):
            kind += " [yellow](cautious)[/yellow]"
        tripped = [g["tag"] for g in effort["guard"]["tripped"]]
        table.add_row(
            str(p["project"]),
            f"{(now or {}).get('tasks', 0)} ({total['tasks']})",
            _both(now, total, "edits_per_task", _num),
            _both(now, total, "scratch_per_task", _num),
            _both(now, total, "saved_share", lambda v: _pct(v, signed=True)),
            _both(now, total, "precision", _pct),
            _both(now, total, "recall", _pct),
            _both(now, total, "costlier_share", _pct),
            str(effort["counting"]["pending"]),
            kind,
            ", ".join(tripped[:5]) + (" ..." if len(tripped) > 5 else "") if tripped else "-",
        )
    console.print(table)
    for p in rows:
        note = (p["preannotation"].get("calibration") or {}).get("note")
        if note:
            console.print(f"project {p['project']}: {note}", highlight=False)
    console.print("Per tag: `assistant effort --project ID`.")
