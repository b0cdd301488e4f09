"""`assistant agent …`: the agent that runs labeling projects by itself, and its decision log.

The agent looks at each project (Label Studio, the corrections ledger, the model registry, the
round lock), decides with one documented policy what to do (pre-annotate new tasks, re-score after
a config change, run a round, re-predict after a promotion, choose the next batch, queue
annotations for review), does it through the workers, and writes every decision, its reason and
its outcome to the decision log. Needs running workers (`assistant worker`) and, for the events
that wake it at once, the backend (`assistant serve`). See docs/agent.md.

Examples:
    assistant agent run --project 3                 # forever (Ctrl-C stops it between actions)
    assistant agent run                             # every project with an image-tagging config
    assistant agent run --project 3 --once          # one step, then exit
    assistant agent run --project 3 --dry-run       # what it would do now; changes nothing
    assistant agent log --project 3                 # the story: one line per decision
    assistant agent log --project 3 --rows --json   # every row, as JSON
    assistant agent policy                          # the policy's settings
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from agent.loop import Agent, StepReport
    from agent.services import AgentServices
    from agent.settings import AgentSettings
    from assistant.agent_policy import Decision, Observation

__all__ = ["ALIVE_FILE", "agent_app", "health", "log", "policy", "run"]

agent_app = typer.Typer(
    help="The agent: runs labeling projects by itself (pre-annotation, rounds, selection, review) and explains why.",
    no_args_is_help=True,
)

Projects = Annotated[
    list[int] | None,
    typer.Option("--project", "-p", min=1, help="A Label Studio project (repeatable; default: settings, else all)."),
]


#: Touched while the agent runs (``assistant agent health`` reads it; the compose healthcheck).
ALIVE_FILE = "agent-alive"
# Liveness marks at most this often (each is a file touch).
_ALIVE_EVERY_S = 10.0


def _liveness(settings: AgentSettings) -> Any:
    path = settings.home / ALIVE_FILE
    last = [0.0]

    def touch() -> None:
        now = time.monotonic()
        if now - last[0] >= _ALIVE_EVERY_S:
            last[0] = now
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    return touch


def _build(settings: AgentSettings) -> tuple[AgentServices, Agent]:
    from agent.execute import LabelStudioExecutor
    from agent.loop import Agent
    from agent.observe import Observer
    from agent.services import build_services
    from assistant.agent_policy import Policy
    from backends.webhook_check import check_webhook

    svc = build_services(settings)
    observer = Observer(
        svc.reader,
        svc.registry,
        svc.ledger,
        svc.locks,
        svc.log,
        models_dir=settings.models_dir,
        schedule=settings.agent_round_schedule,
        flag_below=settings.agent_review_quality,
        full_check_s=settings.agent_full_check_s,
        check_webhook=functools.partial(check_webhook, svc.client),
    )
    policy = Policy(settings.policy_config())
    return svc, Agent(policy, observer, LabelStudioExecutor(svc), svc.log, heartbeat=_liveness(settings))


def _project_source(svc: AgentServices, chosen: list[int]) -> Any:
    """The projects to run: the chosen ones, else every project with an image-tagging config (re-listed)."""
    from studio.config import parse_label_config
    from studio.errors import LabelConfigError

    if chosen:
        return lambda: chosen
    cache: dict[str, Any] = {"at": 0.0, "projects": []}

    def projects() -> list[int]:
        if time.monotonic() - cache["at"] >= max(60.0, svc.settings.agent_full_check_s) or not cache["projects"]:
            usable = []
            for summary in svc.reader.projects():
                try:
                    parse_label_config(summary.label_config)
                except LabelConfigError:
                    continue
                usable.append(summary.project)
            cache.update(at=time.monotonic(), projects=usable)
        return list(cache["projects"])

    return projects


def _print_decisions(console: Console, obs: Observation, decisions: list[Decision]) -> None:
    console.print(f"[bold]Project {obs.project}[/bold] saw: {json.dumps(obs.summary())}", highlight=False)
    if not decisions:
        console.print("  nothing to do", highlight=False)
    for d in decisions:
        console.print(f"  {d.action:<11} {d.status:<8} {d.reason}", highlight=False)


def _print_step(console: Console, report: StepReport) -> None:
    from agent.report import describe_outcome

    for r in report.records:
        outcome = describe_outcome(r.decision.action, r.outcome)
        console.print(
            f"{r.at:%H:%M:%S} p{r.decision.project} {r.decision.action:<11} {r.status:<8} "
            + (outcome if r.status != "pending" else r.decision.reason),
            highlight=False,
        )


@agent_app.command("run")
def run(
    project: Projects = None,
    once: Annotated[bool, typer.Option("--once", help="One step per project, then exit.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what it would decide now; execute and log nothing.")
    ] = False,
    interval: Annotated[
        float | None, typer.Option("--interval", min=0.1, help="Seconds between looks (default: settings).")
    ] = None,
) -> None:
    """Run the agent: observe, decide, act, explain; until stopped (SIGTERM/Ctrl-C stop it between actions)."""
    from rich.console import Console

    from agent.loop import run_forever
    from agent.services import LockKeeper
    from agent.settings import get_agent_settings
    from state.logs import configure_logging

    settings = get_agent_settings()
    configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    # One line per Label Studio request would bury the decisions (a look is 3+ requests).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    console = Console()
    svc, agent = _build(settings)
    keeper = LockKeeper(svc.agent_locks, settings.agent_lock_ttl_s)
    stop = agent.stop
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        projects = _project_source(svc, list(project or settings.agent_projects))
        if dry_run:
            for p in projects():
                obs, decisions = agent.decide(p)
                _print_decisions(console, obs, decisions)
            return
        if once:
            holder = f"agent-once:{threading.get_ident()}"
            for p in projects():
                if keeper.claim(p, holder):
                    _print_step(console, agent.step(p, force=True))
            return
        console.print(
            f"Agent running on {', '.join(map(str, projects())) or 'no project yet'}; decision log: "
            f"{svc.log.description}. Stop with Ctrl-C or SIGTERM.",
            highlight=False,
        )
        run_forever(
            agent,
            projects,
            wait=svc.inbox.wait,
            interval_s=interval or settings.agent_interval_s,
            claim=keeper.claim,
            on_step=lambda report: _print_step(console, report),
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        keeper.close()
        svc.close()


@agent_app.command("log")
def log(
    project: Annotated[int | None, typer.Option("--project", "-p", min=1, help="One project (default: all).")] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="At most this many decisions (the newest).")] = 50,
    rows: Annotated[
        bool, typer.Option("--rows", help="Every row (each state change), not one line per decision.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON to stdout.")] = False,
) -> None:
    """The decision log: what the agent saw, what it chose, why, and how it ended."""
    from agent.decision_log import open_decision_log
    from agent.report import story
    from agent.settings import get_agent_settings

    settings = get_agent_settings()
    decisions = open_decision_log(
        settings.agent_log_url, home=settings.home, table_prefix=settings.agent_log_table_prefix
    )
    try:
        records = decisions.records(project)
    finally:
        decisions.close()
    if not rows:
        latest: dict[str, Any] = {}
        for record in records:
            latest[record.key] = record
        records = list(latest.values())
    records = records[-last:]
    if json_output:
        typer.echo(json.dumps([r.to_json() for r in records], indent=1, default=str))
        return
    if not records:
        typer.echo("The agent has decided nothing yet" + (f" for project {project}." if project else "."))
        return
    for line in story(records, every_row=True):
        typer.echo(line)


@agent_app.command("health")
def health(
    max_age: Annotated[
        float, typer.Option("--max-age", min=1, help="Seconds since the agent's last sign of life (default: 600).")
    ] = 600.0,
) -> None:
    """Exit 0 when an agent on this machine showed life recently (the compose healthcheck), else 1."""
    from agent.settings import get_agent_settings

    path = get_agent_settings().home / ALIVE_FILE
    age = time.time() - path.stat().st_mtime if path.is_file() else None
    if age is None or age > max_age:
        seen = "never" if age is None else f"{age:.0f} s ago"
        typer.echo(f"unhealthy: the agent's last sign of life ({path}) was {seen}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"healthy: the agent showed life {age:.0f} s ago")


@agent_app.command("policy")
def policy(json_output: Annotated[bool, typer.Option("--json", help="JSON to stdout.")] = False) -> None:
    """The policy's settings (ASSISTANT_AGENT_*), and the agent's own."""
    from agent.settings import get_agent_settings

    settings = get_agent_settings()
    doc = {
        **settings.policy_config().as_dict(),
        "round_schedule": settings.agent_round_schedule,
        "interval_s": settings.agent_interval_s,
        "full_check_s": settings.agent_full_check_s,
        "action_timeout_s": settings.agent_action_timeout_s,
        "projects": settings.agent_projects or "all with an image-tagging config",
    }
    if json_output:
        typer.echo(json.dumps(doc, indent=1))
        return
    for key, value in doc.items():
        typer.echo(f"{key:<24} {value}")
