"""`assistant select`: choose the tasks annotators label next, and put them first in Label Studio.

The unlabeled tasks of the project are scored by the workers (``assistant.score_pool`` on the
predict queue, features from the feature cache where present) and a selection strategy chooses
``--k`` of them. Unless ``--dry-run``, their ranks go into the tasks' data (``assistant_rank``)
and a Data Manager tab "Assistant: label next" lists exactly them, in order: annotators open the
tab and click "Label All Tasks" (see ``backends/ordering.py``). Needs running workers
(`assistant worker`).

Examples:
    assistant select --project 3 --k 100                       # hybrid: uncertain and diverse
    assistant select --project 3 --k 50 --strategy novelty     # images likely to show the novel tags
    assistant select --project 3 --k 100 --dry-run --json selection.json
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.registry_help import strategy_help
from errors import AssistantError

if TYPE_CHECKING:
    from celery import Celery
    from rich.console import Console

    from backends.ordering import PushReport, RankedTask
    from backends.settings import BackendSettings
    from state.contracts import ImageRef, ScorePoolResult
    from studio.client import LabelStudioClient
    from studio.controls import ProjectVocabulary
    from studio.protocol import Task

__all__ = ["SCORE_CAPTION", "Services", "print_ranking", "push", "select", "services"]

Project = Annotated[int, typer.Option("--project", "-p", min=1, help="Label Studio project id.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the choice; change nothing in Label Studio.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result to this JSON file.")]
ModelVersion = Annotated[
    str | None,
    typer.Option("--model-version", help="A registry version to score with (default: the project's current)."),
]
Timeout = Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the workers.")]


@dataclass
class Services:
    """What the commands talk to."""

    settings: BackendSettings
    client: LabelStudioClient
    app: Celery


def services() -> Services:
    """Settings, the Label Studio client and a Celery app that only sends (no task imports)."""
    from backends.settings import get_backend_settings
    from studio.client import LabelStudioClient
    from workers.celery_app import make_celery

    settings = get_backend_settings()
    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())
    return Services(settings, client, make_celery(settings, include=()))


def wait_for(app: Celery, name: str, payload: dict[str, Any], queue: str, timeout: float, what: str) -> Any:
    """Send a task by name and wait for its result (a spinner meanwhile)."""
    from rich.console import Console

    # Celery rebuilds a worker's error as its own class only when the class's module is loaded here
    # (it looks the module up in sys.modules); loaded, a worker's error reaches the CLI's boundary
    # with its what / why / fix instead of as an anonymous exception.
    import state.registry  # noqa: F401
    import workers.errors  # noqa: F401

    handle = app.send_task(name, kwargs=payload, queue=queue)
    deadline = time.monotonic() + timeout
    with Console(stderr=True).status(f"{what} …") as spinner:
        while not handle.ready():
            if time.monotonic() > deadline:
                handle.revoke()
                raise AssistantError(
                    f"{what}: no answer within {timeout:.0f} s",
                    why="no worker took the task, or it is still busy",
                    fix="start `assistant worker` (or check `assistant status`), or give it longer with --timeout",
                )
            spinner.update(f"{what}: {handle.state.lower()} …")
            time.sleep(0.5)
    return handle.get(propagate=True)


def _refs(vocab: ProjectVocabulary, tasks: list[Task]) -> tuple[list[ImageRef], int]:
    from backends.convert import task_image_refs
    from backends.errors import TaskDataError

    refs: list[ImageRef] = []
    unusable = 0
    for task in tasks:
        try:
            refs.extend(task_image_refs(vocab, task))
        except TaskDataError:
            unusable += 1
    return refs, unusable


# Why the score column is not sorted: printed under every ranking, so nobody has to ask.
SCORE_CAPTION = (
    "rank: the order to label in. score: the strategy's own measure at the moment it picked the task "
    "(higher was more wanted). Greedy strategies (hybrid, diversity, novelty) pick one task at a time and "
    "re-measure the rest after each pick, so a later pick can score higher than an earlier one: "
    "the rank, not the score, is the order."
)


def print_ranking(
    console: Console, title: str, rows: list[tuple[int, int, float, str]], caption: str | None = None
) -> None:
    """A table of ``(rank, task id, score, reason)``, with ``caption`` (what the score means) under it."""
    from rich.table import Table

    table = Table(title=title)
    for column, justify in (("rank", "right"), ("task", "right"), ("score", "right"), ("why", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for rank, task, score, reason in rows:
        table.add_row(str(rank), str(task), f"{score:.3f}", reason)
    console.print(table)
    if caption:  # under the table, at the console's width (a table caption wraps to the table's)
        console.print(caption, highlight=False)


def push(
    console: Console, svc: Services, project: int, ranked: list[RankedTask], tasks: list[Task], *, review: bool
) -> PushReport:
    """Push an order into Label Studio and say where to find it."""
    from backends.ordering import RANK_FIELD, REVIEW_FIELD, REVIEW_VIEW, SELECT_VIEW, push_order

    field, title = (REVIEW_FIELD, REVIEW_VIEW) if review else (RANK_FIELD, SELECT_VIEW)
    report = push_order(svc.client, project, ranked, tasks, field=field, title=title)
    console.print(
        f"Pushed {report.ranked} ranks into data.{field} ({report.cleared} earlier ranks cleared); "
        f"Data Manager tab [bold]{title}[/bold] (view {report.view_id}, "
        f"{'created' if report.view_created else 'updated'}) lists them in order"
        + ("." if review else ": open it and click 'Label All Tasks'."),
        highlight=False,
    )
    return report


def select(
    project: Project,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many tasks to choose.")] = 100,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=strategy_help())] = "hybrid",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the strategy's randomness.")] = 0,
    dry_run: DryRun = False,
    model_version: ModelVersion = None,
    timeout: Timeout = 900.0,
    json_out: JsonOut = None,
) -> None:
    """Choose the tasks to label next (active learning) and put them first in Label Studio."""
    from rich.console import Console

    from state.contracts import SCORE_POOL, ScorePoolRequest, ScorePoolResult
    from studio.config import parse_label_config

    console = Console()
    svc = services()
    vocab = parse_label_config(svc.client.label_config(project))
    tasks = svc.client.tasks(project)
    unlabeled_ids = {t.id for t in svc.client.tasks(project, unlabeled_only=True)}
    pool, unusable = _refs(vocab, [t for t in tasks if t.id in unlabeled_ids])
    labeled, _ = _refs(vocab, [t for t in tasks if t.id not in unlabeled_ids])
    if not pool:
        console.print(f"Project {project} has no unlabeled task with an image: nothing to choose from.")
        return
    request = ScorePoolRequest(
        project=project,
        model_version=model_version,
        labels=list(vocab.labels),
        images=pool,
        labeled=labeled,
        strategy=strategy,
        k=k,
        seed=seed,
        request_id=f"select-{uuid.uuid4().hex[:12]}",
        break_even=svc.settings.edit_costs(project).break_even,
    )
    answer = wait_for(
        svc.app,
        SCORE_POOL,
        request.model_dump(mode="json"),
        svc.settings.predict_queue,
        timeout,
        f"Scoring {len(pool)} unlabeled images",
    )
    result = ScorePoolResult.model_validate(answer)
    ranked = _ranked(result)
    console.print(
        f"Project {project}: {result.strategy} chose {len(ranked)} of {result.pool_size} unlabeled images "
        f"({result.cached} from the feature cache, {len(result.failed)} failed, {unusable} tasks without an image); "
        f"model {result.model_version}, seed {seed}"
        + (f", novel labels {', '.join(result.novel_labels)}" if result.novel_labels else "")
        + ".",
        highlight=False,
    )
    rows = [(r.rank, r.task_id, s, r.reason) for r, s in ranked]
    print_ranking(console, f"Label next ({result.strategy})", rows, SCORE_CAPTION)
    document = {"project": project, "seed": seed, **result.model_dump(mode="json")}
    if not dry_run:
        report = push(console, svc, project, [r for r, _ in ranked], tasks, review=False)
        document["view_id"] = report.view_id
    else:
        console.print("Dry run: nothing was changed in Label Studio.")
    if json_out is not None:
        json_out.write_text(json.dumps(document, indent=1) + "\n")


def _ranked(result: ScorePoolResult) -> list[tuple[RankedTask, float]]:
    """One entry per task (a task with several images ranks by its best image)."""
    from backends.ordering import RankedTask

    out: list[tuple[RankedTask, float]] = []
    seen: set[int] = set()
    for chosen in result.chosen:
        task_id = chosen.task_id if chosen.task_id is not None else int(chosen.key.split(":")[0])
        if task_id in seen:
            continue
        seen.add(task_id)
        out.append((RankedTask(task_id, len(out) + 1, chosen.reason), chosen.score))
    return out
