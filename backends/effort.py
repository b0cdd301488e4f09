"""Counting annotators' edits: each annotation against the prediction its annotator started from.

The webhook only records annotation events in the corrections ledger (Label Studio gives it 1 s
and one try). This module does the rest, on a worker, as the light Celery task
``backends.count_effort`` (the webhook asks for it after each annotation event, and the beat
runs it for every project every ``ASSISTANT_EFFORT_CHECK_INTERVAL_S`` as a safety net):

1. read the project's ledger rows past its counting cursor (``state.effort``), in batches;
2. per annotation (its latest revision in the batch): fetch the prediction its annotator started
   from, ``parent_prediction``, else the task's latest prediction made before the annotation;
3. compare (:func:`compare`): per tag of the labeling config's image-tagging controls, shown and
   present, with the probabilities the prediction kept (``backends.convert``'s ``assistant`` key);
4. store the counts and move the cursor, in one transaction (``EffortStore.record``): an update
   replaces the annotation's counts, a deletion removes them, a skipped task or one without a
   prediction is counted as such;
5. refit the project's calibration when due and judge the guard (``state.effort_upkeep``), each
   tag under the edit costs its predictions are served with (its control's ``model_cost_*``
   knobs, else the project's); when the labeling config cannot be read, the guard waits for the
   next pass (the refit does not need the config).

**Nothing is lost.** The cursor moves only with the counts. When Label Studio cannot be reached
the pass stops where it is, records the failure (``assistant status`` and ``/metrics`` show the
annotations still to count and the error) and the task retries with backoff; the next pass, or
the beat's, resumes from the cursor. A prediction Label Studio no longer has (404) falls back to
the task's latest one; an annotation that cannot be read is counted as ``failed``.

**Tags** are target keys (a choice's output string, a taxonomy path), as in the predictions'
per-tag scores; two controls with a choice of the same name share it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from pydantic import ValidationError

from backends.errors import BackendError
from backends.state import SharedState
from backends.tasks import client_of, ledger_of, state_of
from state.contracts import COUNT_EFFORT
from state.effort import EffortStore
from state.effort_records import CountedAnnotation, TagAnswer
from state.effort_upkeep import UpkeepReport, refit_if_due, upkeep
from state.ledger import Ledger, LedgerEntry
from state.registry import Registry
from state.settings import Settings
from studio.config import parse_label_config
from studio.controls import ProjectVocabulary
from studio.errors import LabelStudioUnavailable, StudioError
from studio.protocol import ResultItem
from studio.results import keys_by_control
from workers.celery_app import settings_of

__all__ = ["CountReport", "EffortCounter", "PredictionSource", "compare", "count_effort"]

logger = logging.getLogger(__name__)

#: Ledger rows read per transaction.
BATCH: Final = 200
# A project's counting lock (one pass at a time; another request finds it taken and leaves the
# work to the holder, which looks again after releasing it). A pass of 200 rows takes ~10 s
# (one Label Studio request each); a holder that died frees it after 5 minutes.
_LOCK_TTL_S: Final = 300.0


class PredictionSource(Protocol):
    """What the counting reads from Label Studio (``LabelStudioClient``; a fake in unit tests)."""

    def label_config(self, project: int) -> str:
        """The project's labeling config."""
        ...

    def prediction(self, prediction: int) -> dict[str, Any] | None:
        """One prediction, or None when Label Studio has none by that id."""
        ...

    def task_predictions(self, task: int) -> list[dict[str, Any]]:
        """Every prediction of a task."""
        ...


# --- the comparison ---------------------------------------------------------------------------------
def _items(raw: Any) -> list[ResultItem]:
    """The result items Label Studio returned that parse (an odd one names no tag)."""
    items = []
    for item in raw if isinstance(raw, list) else []:
        with contextlib.suppress(ValidationError):
            items.append(ResultItem.model_validate(item))
    return items


def _tags(vocab: ProjectVocabulary, items: Sequence[ResultItem]) -> set[str]:
    return {key for keys in keys_by_control(vocab, items)[0].values() for key in keys}


def _float(value: Any) -> float | None:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    return p if 0.0 <= p <= 1.0 else None


def compare(
    vocab: ProjectVocabulary,
    entry: LedgerEntry,
    prediction: Mapping[str, Any],
    source: str,
) -> CountedAnnotation:
    """One annotation (a ledger row) against the prediction its annotator started from.

    Args:
        vocab: The project's vocabulary (the labeling config's image-tagging controls).
        entry: The annotation's ledger row.
        prediction: The prediction, as Label Studio returns it (``result``, ``model_version``).
        source: ``parent`` or ``latest`` (how the prediction was found).

    Returns:
        Per tag: shown, present, novel, the model's own and the served probability.
    """
    event = entry.event
    result = _items(prediction.get("result"))
    shown, present = _tags(vocab, result), _tags(vocab, _items(event.result))
    served: dict[str, float] = {}
    own: dict[str, float] = {}
    novel: set[str] = set()
    calibration, recalibration = "", None
    active = {c.name for c in vocab.active}
    for item in result:
        extras = item.assistant
        if extras is None or item.from_name not in active:
            continue
        for key, value in (extras.get("scores") or {}).items():
            if (p := _float(value)) is not None:
                served[str(key)] = p
        for key, value in (extras.get("model_scores") or {}).items():
            if (p := _float(value)) is not None:
                own[str(key)] = p
        novel.update(str(k) for k in extras.get("novel") or [])
        calibration = str(extras.get("calibration") or calibration)
        recalibration = extras.get("recalibration") or recalibration
    answers = tuple(
        TagAnswer(
            tag=tag,
            shown=tag in shown,
            present=tag in present,
            novel=tag in novel,
            # The model's own probability: model_scores when a refit served the prediction.
            model_p=own.get(tag, served.get(tag)) if recalibration else served.get(tag),
            served_p=served.get(tag),
        )
        for tag in sorted(shown | present | set(served))
    )
    return CountedAnnotation(
        annotation_id=int(event.annotation_id or 0),
        task=event.task,
        event_seq=entry.seq,
        prediction_id=_int(prediction.get("id")),
        source="parent" if source == "parent" else "latest",
        model_version=str(prediction.get("model_version") or ""),
        calibration=calibration,
        recalibration=None if recalibration is None else str(recalibration),
        answers=answers,
        annotated_at=event.created_at or entry.received_at,
    )


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _created(prediction: Mapping[str, Any]) -> tuple[dt.datetime, int]:
    """Sort key of predictions: creation time, then id."""
    return _time(prediction.get("created_at")) or _EPOCH, _int(prediction.get("id")) or 0


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time(text: Any) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# --- the pass ---------------------------------------------------------------------------------------
@dataclass
class CountReport:
    """What one counting pass did in a project.

    Attributes:
        project: The project.
        counted: Annotations compared.
        deleted: Annotations whose counts were removed (deleted in Label Studio).
        skipped: Not counted, by reason (``cancelled``, ``unpredicted``, ``failed``).
        through: The last ledger ``seq`` counted.
        upkeep: The refit and guard events that followed.
    """

    project: int
    counted: int = 0
    deleted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    through: int = 0
    upkeep: UpkeepReport = field(default_factory=UpkeepReport)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the task's result)."""
        refit = self.upkeep.refit
        return {
            "project": self.project,
            "counted": self.counted,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "through": self.through,
            "refit": None if refit is None else {"id": refit.id, "status": refit.status, "answers": refit.answers},
            "guard_events": [e.to_json() for e in self.upkeep.events],
        }


class EffortCounter:
    """Counts a project's new annotations (module docstring).

    Args:
        ledger: The corrections ledger (its ``effort`` store receives the counts).
        source: Label Studio.
        registry: The model registry (the checkpoint serving the project).
        settings: Costs, refit and guard settings.
        batch: Ledger rows per transaction.
    """

    def __init__(
        self, ledger: Ledger, source: PredictionSource, registry: Registry, settings: Settings, batch: int = BATCH
    ) -> None:
        self.ledger, self.source, self.registry, self.settings = ledger, source, registry, settings
        self.store: EffortStore = ledger.effort
        self.batch = batch

    def pending(self, project: int) -> int:
        """Ledger rows of the project not counted yet."""
        return self.ledger.count(project, self.store.state(project).counted_through)

    def run(self, project: int) -> CountReport:
        """Count every pending row of the project, then refit and judge the guard.

        Raises:
            LabelStudioUnavailable: Label Studio could not be reached (recorded first; retry later).
            StudioError: Label Studio refused the config request, or the config is unusable (recorded first).
        """
        report = CountReport(project)
        try:
            vocab = self._count(project, report)
        except (BackendError, StudioError) as exc:
            state = self.store.note_failure(project, exc.message)
            logger.warning(
                "project %s: counting stopped (failure %d in a row, %d rows still to count): %s",
                project,
                state.failures,
                self.pending(project),
                exc.message,
            )
            raise
        checkpoint = self.registry.current(project).version
        if self.settings.guard_enabled and vocab is None:
            try:
                vocab = parse_label_config(self.source.label_config(project))
            except (BackendError, StudioError) as exc:  # the guard judges under the right costs or not at all
                logger.warning("project %s: the guard waits for the next pass: %s", project, exc.message)
                report.upkeep = UpkeepReport(refit_if_due(self.store, project, checkpoint, self.settings), [])
                return report
        tag_costs = None if vocab is None else vocab.tag_costs(self.settings.edit_costs(project))
        report.upkeep = upkeep(self.store, project, checkpoint, self.settings, tag_costs)
        return report

    def _count(self, project: int, report: CountReport) -> ProjectVocabulary | None:
        """Count the pending rows; the labeling config it parsed, if it needed one."""
        vocab: ProjectVocabulary | None = None
        costs = self.settings.edit_costs(project)
        while True:
            since = self.store.state(project).counted_through
            entries = self.ledger.entries(project, since=since, limit=self.batch)
            if not entries:
                return vocab
            latest: dict[int, LedgerEntry] = {}
            for entry in entries:  # an annotation's latest revision in the batch is what counts
                if entry.event.annotation_id is not None:
                    latest.pop(entry.event.annotation_id, None)
                    latest[entry.event.annotation_id] = entry
            counted: list[CountedAnnotation] = []
            deleted: list[int] = []
            uncounted: list[int] = []
            skipped: dict[str, int] = {}
            for annotation, entry in latest.items():
                if entry.deleted:
                    deleted.append(annotation)
                    continue
                if entry.event.was_cancelled:
                    uncounted.append(annotation)
                    skipped["cancelled"] = skipped.get("cancelled", 0) + 1
                    continue
                if vocab is None:
                    vocab = parse_label_config(self.source.label_config(project))
                try:
                    found = self._prediction(entry)
                except LabelStudioUnavailable:
                    raise
                except (BackendError, StudioError) as exc:  # this annotation only (e.g. a prediction LS refuses)
                    logger.warning("project %s: annotation %s not counted: %s", project, annotation, exc.message)
                    uncounted.append(annotation)
                    skipped["failed"] = skipped.get("failed", 0) + 1
                    continue
                if found is None:
                    uncounted.append(annotation)
                    skipped["unpredicted"] = skipped.get("unpredicted", 0) + 1
                    continue
                counted.append(compare(vocab, entry, found[0], found[1]))
            through = entries[-1].seq
            self.store.record(
                project,
                through=through,
                counted=counted,
                deleted=deleted,
                uncounted=uncounted,
                skipped=skipped,
                costs=costs,
            )
            report.counted += len(counted)
            report.deleted += len(deleted)
            for reason, n in skipped.items():
                report.skipped[reason] = report.skipped.get(reason, 0) + n
            report.through = through

    def _prediction(self, entry: LedgerEntry) -> tuple[dict[str, Any], str] | None:
        """The prediction the annotator started from, and how it was found (module docstring)."""
        event = entry.event
        if event.parent_prediction is not None:
            found = self.source.prediction(event.parent_prediction)
            if found is not None:
                return found, "parent"
        if event.task is None:
            return None
        made = _time(event.created_at) or _time(entry.received_at)
        before = [
            p
            for p in self.source.task_predictions(event.task)
            if made is None or (_time(p.get("created_at")) or made) <= made
        ]
        if not before:
            return None
        return max(before, key=_created), "latest"


# --- the Celery task ----------------------------------------------------------------------------------
def count_projects(
    counter: EffortCounter, state: SharedState, projects: Sequence[int], owner: str
) -> tuple[list[CountReport], dict[int, BackendError | StudioError]]:
    """Run a pass for each project under its counting lock; a project whose lock is held is left to its holder.

    Returns:
        The reports, and project -> error for the projects whose pass failed (recorded already).
    """
    reports: list[CountReport] = []
    errors: dict[int, BackendError | StudioError] = {}
    for project in projects:
        while state.acquire_lock(f"effort:{project}", owner, _LOCK_TTL_S):
            try:
                reports.append(counter.run(project))
            except (BackendError, StudioError) as exc:
                errors[project] = exc
            finally:
                state.release_lock(f"effort:{project}", owner)
            # A row that arrived while the lock was held found it taken: look once more.
            if project in errors or counter.pending(project) == 0:
                break
    return reports, errors


@shared_task(name=COUNT_EFFORT, bind=True, acks_late=True, max_retries=8)  # type: ignore[untyped-decorator]
def count_effort(self: Task, project: int | None = None, token: str | None = None) -> dict[str, Any]:
    """Count new annotations of one project, or of every project with uncounted rows (the beat's).

    Label Studio unreachable: the failure is recorded (``assistant status``), and a one-project
    pass retries with backoff (8 tries, ~3 min on average); the beat's next pass resumes either way.

    Args:
        project: The project (None: every project with rows to count).
        token: The "count queued" mark the webhook's request set (``backends.dispatch``): removed
            first, so that annotations arriving from now on ask for a count of their own.

    Returns:
        ``{"reports": [...], "errors": {project: message}}``.
    """
    settings = settings_of(self.app)
    if project is not None and token is not None:
        with contextlib.suppress(Exception):  # the mark expires by itself
            state_of(settings).release_lock(f"count-queued:{project}", token)
    ledger = ledger_of(settings)
    counter = EffortCounter(ledger, client_of(settings), Registry(settings.models_dir, settings.base_model), settings)
    projects = [project] if project is not None else [p for p in ledger.projects() if counter.pending(p) > 0]
    reports, errors = count_projects(counter, state_of(settings), projects, str(self.request.id or uuid.uuid4().hex))
    failed = errors.get(project) if project is not None else None
    if isinstance(failed, LabelStudioUnavailable) and self.request.retries < self.max_retries:
        # Full jitter in [0, min(120, 2 * 2**n)] s, as the publish task's autoretry.
        countdown = get_exponential_backoff_interval(2, self.request.retries, 120, full_jitter=True)
        raise self.retry(exc=failed, countdown=countdown)
    return {"reports": [r.to_json() for r in reports], "errors": {str(k): v.message for k, v in errors.items()}}
