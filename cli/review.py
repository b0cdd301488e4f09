"""`assistant review`: annotated tasks whose tags the model strongly disagrees with, first in Label Studio.

Every annotated task (its latest non-cancelled annotation, read as the rounds read it:
``workers/round_data.py``) is scored by the workers (``assistant.predict``), and its label quality
is rated as in cleanlab's multi-label issue detection (``assistant/label_quality.py``): the tasks
with a tag the annotator likely missed or got wrong come first. Unless ``--dry-run``, their ranks
go into the tasks' data (``assistant_review``) and a Data Manager tab "Assistant: review" lists
them, worst first.

The model in service may have trained on these very annotations, and a model that fitted a
mistake agrees with it: the review is sharpest right after annotations come in, before the round
that trains on them (or with ``--model-version`` of an earlier model).

Examples:
    assistant review --project 3                       # the worst 5% of the annotated tasks
    assistant review --project 3 --k 40 --dry-run
"""

from __future__ import annotations

import json
import math
import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from cli.select import DryRun, JsonOut, ModelVersion, Project, Timeout, print_ranking, push, services, wait_for

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from cli.select import Services
    from workers.round_data import ExportedTask

__all__ = ["review"]

# Images per predict message (state.contracts.MAX_IMAGES is the cap).
_CHUNK = 256


def review(
    project: Project,
    fraction: Annotated[
        float, typer.Option("--fraction", min=0.0, max=1.0, help="Share of the annotated tasks to flag.")
    ] = 0.05,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, help="Flag this many instead of a fraction.")] = None,
    dry_run: DryRun = False,
    model_version: ModelVersion = None,
    timeout: Timeout = 900.0,
    json_out: JsonOut = None,
) -> None:
    """Flag annotated tasks whose annotations the model strongly disagrees with, worst first."""
    from rich.console import Console

    from assistant.corrections import correction_targets
    from assistant.label_quality import review_labels
    from assistant.labels import LabelSet
    from backends.ordering import RankedTask

    console = Console()
    svc = services()
    exported, labels = _annotated(svc, project)
    if not exported:
        console.print(f"Project {project} has no annotated task to review.")
        return
    probs, thresholds, version = _scores(svc, project, exported, labels, model_version, timeout)
    tasks = svc.client.tasks(project)
    scored = [i for i in range(len(exported)) if not math.isnan(float(probs[i, 0]))]
    targets = correction_targets(LabelSet(tuple(labels)), [exported[i].annotation for i in scored])
    result = review_labels(probs[scored], targets, labels, thresholds)
    flagged = result.flagged(fraction=fraction, count=k)
    ranked = []
    rows = []
    for rank, i in enumerate(flagged.tolist(), start=1):
        task = exported[scored[i]]
        issue = result.worst[i]
        reason = issue.describe() if issue is not None else "no known tag"
        ranked.append(RankedTask(task.task_id, rank, reason))
        rows.append((rank, task.task_id, float(result.worst_quality[i]), float(result.quality[i]), reason))
    console.print(
        f"Project {project}: rated {len(scored)} annotated tasks with model {version} "
        f"({len(exported) - len(scored)} could not be scored); flagged the {len(flagged)} with the lowest label "
        "quality, worst tag first (score: the worst tag's quality; 1 = the model agrees with every tag).",
        highlight=False,
    )
    print_ranking(console, "Review first", [(r, t, worst, why) for r, t, worst, _, why in rows])
    document = {
        "project": project,
        "model_version": version,
        "flagged": [
            {"rank": r, "task": t, "worst_tag_quality": worst, "quality": q, "reason": why}
            for r, t, worst, q, why in rows
        ],
    }
    if not dry_run and ranked:
        document["view_id"] = push(console, svc, project, ranked, tasks, review=True).view_id
    elif dry_run:
        console.print("Dry run: nothing was changed in Label Studio.")
    if json_out is not None:
        json_out.write_text(json.dumps(document, indent=1) + "\n")


def _annotated(svc: Services, project: int) -> tuple[list[ExportedTask], list[str]]:
    """The annotated tasks as the rounds read them, and the config's model labels."""
    from studio.config import parse_label_config
    from studio.export import prediction_index
    from workers.round_data import LabelHistory, exported_tasks

    settings = svc.settings
    vocab = parse_label_config(svc.client.label_config(project))
    # Read-only: the rounds keep this history; without it every option counts as always shown.
    history = LabelHistory(settings.models_dir / "rounds" / str(project) / "labels.json").load()
    predictions = prediction_index(svc.client.predictions(project))
    exported, _ = exported_tasks(svc.client.export(project), predictions, vocab, history)
    return exported, list(vocab.labels)


def _scores(
    svc: Services,
    project: int,
    exported: list[ExportedTask],
    labels: list[str],
    model_version: str | None,
    timeout: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], str]:
    """Calibrated scores ``(N, C)`` (NaN rows for images that failed), thresholds, model version."""
    import numpy as np

    from state.contracts import PREDICT, ImageRef, PredictRequest, PredictResult

    probs = np.full((len(exported), len(labels)), np.nan)
    thresholds: NDArray[np.float64] = np.full(len(labels), 0.5)
    version = ""
    row_of = {str(e.task_id): i for i, e in enumerate(exported)}
    refs = [ImageRef(key=str(e.task_id), url=e.image_url, task_id=e.task_id) for e in exported]
    for start in range(0, len(refs), _CHUNK):
        request = PredictRequest(
            project=project,
            model_version=model_version,
            labels=labels,
            images=refs[start : start + _CHUNK],
            request_id=f"review-{uuid.uuid4().hex[:12]}",
        )
        answer = wait_for(
            svc.app,
            PREDICT,
            request.model_dump(mode="json"),
            svc.settings.predict_queue,
            timeout,
            f"Scoring annotated images {start + 1}-{min(len(refs), start + _CHUNK)} of {len(refs)}",
        )
        result = PredictResult.model_validate(answer)
        thresholds = np.asarray(result.thresholds, dtype=np.float64)
        version = result.model_version
        for item in result.items:
            if item.scores is not None:
                probs[row_of[item.key]] = item.scores
    return probs, thresholds, version
