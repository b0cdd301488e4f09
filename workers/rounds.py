"""A project's fine-tuning round end to end, and the ``assistant.train_round`` task that runs it.

:func:`run_project_round` (the CLI calls it directly, the task on the ``train`` queue):

1. claim the project's round lock (``state.locks``) and keep it alive with a heartbeat; a
   project whose lock another live round holds is answered ``busy``;
2. remove what a killed round left behind (staging checkpoints, half-written reports);
3. read the labeling config and the annotations from Label Studio (``studio``) and build the
   round dataset (``workers.round_data``);
4. train, evaluate and decide (``assistant.rounds.run_round``) against the version in service,
   with the base model's backbone as the frozen distillation teacher and the feature cache
   serving stage-2 features;
5. write the candidate checkpoint to a staging folder, register it (atomic move), and promote it
   when it is not worse beyond the tolerance (atomic pointer write) and the lock is still ours;
6. write the report under ``<models_dir>/reports/<project>/<round_id>/``, with the annotators'
   edits against labeling from scratch by model version (``workers.effort_report``), record the
   round's ledger watermark and append a line to ``<models_dir>/rounds/<project>/rounds.jsonl``.

A crash or SIGKILL anywhere before step 5 leaves the registry untouched (the version in service
keeps serving and nothing half-written is registered); the lock expires one heartbeat TTL after
the process died, and the next round cleans the staging folder and reuses the round number.
A round that raises (a label the model rejects, Label Studio unreachable, a broken checkpoint)
appends a ``failed`` line to the round log with the reason, the time and the version it tried to
make (``attempted_version``), so ``assistant round status``, ``assistant status`` and the agent
see it, then raises as before (the task fails; the workers' ``assistant_rounds_total`` counts it
``failed``). Its round number is used up; the ledger's watermark stays, so the corrections still
count as new. Workers serve the new version on their next task (they re-read the ``current`` pointer), and
``/setup`` reports it, so Label Studio re-predicts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from celery import shared_task
from pydantic import ValidationError
from torch.utils.data import Dataset, Subset

from assistant.backbone import ImageFeatures
from assistant.calibration import FitConfig
from assistant.checkpoint import LoadedModel, load_model
from assistant.config import Stage1Config, Stage2Config
from assistant.corrections import AnnotatedImage
from assistant.data import FileImageDataset
from assistant.devices import resolve_device
from assistant.labels import LabelSet
from assistant.model import MKTModel
from assistant.round_report import clean_stale_reports, write_round_report
from assistant.rounds import FeatureFn, InsufficientDataError, RoundConfig, RoundData, run_round, split_annotations
from assistant.train import dataset_targets, encode_dataset
from errors import AssistantError
from state.contracts import TRAIN_ROUND, RoundRequest, RoundResult
from state.ledger import Ledger, open_ledger
from state.locks import Heartbeat, RoundLocks
from state.registry import Registry, VersionRecord
from state.round_log import append_round_log, read_round_log, round_log_path
from state.settings import Settings
from studio.client import LabelStudioClient
from studio.export import prediction_index
from workers.celery_app import settings_of
from workers.effort_report import add_effort_section
from workers.errors import RequestError
from workers.feature_cache import CachedFeatures, FeatureCache
from workers.media import MediaFetcher
from workers.pipeline import from_image_features, to_image_features
from workers.round_data import AnnotationSource, LabelHistory, exported_tasks, fetch_images, round_labels

__all__ = [
    "RoundPaths",
    "cached_features",
    "round_config",
    "run_project_round",
    "train_round",
]

logger = logging.getLogger(__name__)

#: ``progress(phase, done, total)``: ``export``, ``images``, ``stage1``, ``stage2``, ``evaluate``, ``save``.
Progress = Callable[[str, int, int], None]
_ROUND_RE = re.compile(r"^r(\d+)$")


@dataclass(frozen=True)
class RoundPaths:
    """Where a project's round state lives under the registry directory."""

    models_dir: Path
    project: int

    @property
    def state(self) -> Path:
        """``<models_dir>/rounds/<project>``: label history and the round log."""
        return self.models_dir / "rounds" / str(self.project)

    @property
    def log(self) -> Path:
        """The round log (one JSON object per finished or failed round; :mod:`state.round_log`)."""
        return round_log_path(self.models_dir, self.project)

    @property
    def staging(self) -> Path:
        """Candidate checkpoints before registration (removed by the next round when left behind)."""
        return self.models_dir / ".staging" / str(self.project)

    @property
    def reports(self) -> Path:
        """``<models_dir>/reports/<project>``."""
        return self.models_dir / "reports" / str(self.project)


def round_config(settings: Settings, stages: Sequence[str] | None = None, project: int | None = None) -> RoundConfig:
    """The round configuration from settings (``ASSISTANT_ROUND_*``), with the request's stages.

    The promotion gate counts the held-out edits under ``project``'s edit costs (its entry of
    ``ASSISTANT_PROJECT_EDIT_COSTS``, else ``ASSISTANT_EDIT_COST_*``), the costs its predictions
    are served with, so a candidate is judged by the break-even point annotators actually meet.
    """
    chosen = tuple(stages or settings.round_stages)
    return RoundConfig(
        stages=chosen,  # type: ignore[arg-type]
        stage1=Stage1Config(
            epochs=settings.round_stage1_epochs,
            batch_size=settings.round_batch_size,
            lr=settings.round_lr,
            warmup_epochs=min(1.0, settings.round_stage1_epochs / 4),
            distill_weight=settings.round_distill_weight,
            max_steps=settings.round_max_steps,
        ),
        stage2=Stage2Config(
            epochs=settings.round_stage2_epochs,
            batch_size=settings.round_batch_size,
            lr=settings.round_lr,
            max_steps=settings.round_max_steps,
        ),
        tolerance=settings.round_tolerance,
        edits_tolerance=settings.round_edits_tolerance,
        min_label_positives=settings.round_min_label_positives,
        min_label_negatives=settings.round_min_label_negatives,
        min_train_images=settings.round_min_train_images,
        min_heldout_images=settings.round_min_heldout_images,
        calibration=FitConfig(),
        costs=settings.edit_costs(project),
    )


def _next_round(paths: RoundPaths, registry: Registry) -> str:
    numbers = [0]
    for entry in read_round_log(paths.models_dir, paths.project):
        m = _ROUND_RE.match(str(entry.get("round_id", "")))
        if m:
            numbers.append(int(m.group(1)))
    for record in registry.list_versions(paths.project):
        m = _ROUND_RE.match(record.round_id or "")
        if m:
            numbers.append(int(m.group(1)))
    return f"r{max(numbers) + 1:04d}"


def _clean_leftovers(paths: RoundPaths) -> None:
    # Only a round holding the project's lock gets here, so anything staged is a dead round's.
    if paths.staging.is_dir():
        for entry in paths.staging.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
            logger.info("removed the staging folder %s of a round that did not finish", entry)
    clean_stale_reports(paths.reports, max_age_s=0.0)


def cached_features(cache: FeatureCache, batch_size: int = 64) -> FeatureFn:
    """A stage-2 feature function that serves images already in the workers' feature cache.

    Items are content hashes, the cache's keys; images missing for the model's image tower are
    encoded (and not written back: the predict pipeline owns the cache's entries). Every feature
    goes through float16, as in the pipeline.
    """

    def features(model: MKTModel, data: Dataset[Any], items: Sequence[str]) -> tuple[ImageFeatures, torch.Tensor]:
        tower = model.image_tower_version()
        hits = cache.get_many(list(items), tower)
        entries: list[CachedFeatures | None] = [hits.get(item) for item in items]
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if missing:
            fresh, _ = encode_dataset(model, Subset(data, missing), batch_size)
            for i, entry in zip(missing, from_image_features(fresh), strict=True):
                entries[i] = entry
        logger.info("stage-2 features: %d of %d from the feature cache", len(items) - len(missing), len(items))
        targets = torch.from_numpy(dataset_targets(data).astype(np.int8))
        return to_image_features([e for e in entries if e is not None]), targets

    return features


def _round_data(
    annotations: Sequence[AnnotatedImage],
    paths: dict[str, Path],
    labels: LabelSet,
    settings: Settings,
    project: int,
    min_val_images: int = RoundConfig.min_val_images,
) -> RoundData:
    return split_annotations(
        annotations,
        labels,
        lambda rows, targets: FileImageDataset([paths[annotations[i].key] for i in rows], targets),
        salt=f"project-{project}",
        heldout_fraction=settings.round_heldout_fraction,
        val_fraction=settings.round_val_fraction,
        min_val_images=min_val_images,
    )


def _load(source: str, device: str) -> LoadedModel:
    return load_model(source, device=resolve_device(device), allow_random=False)


def _result(project: int, round_id: str, current: str, status: str, reason: str, **extra: Any) -> RoundResult:
    return RoundResult(
        project=project,
        round_id=round_id,
        candidate_version=extra.pop("candidate_version", None),
        current_version=current,
        promoted=status == "promoted",
        reason=reason,
        status=status,
        **extra,
    )


def run_project_round(
    settings: Settings,
    request: RoundRequest,
    *,
    holder: str,
    locks: RoundLocks,
    source: AnnotationSource | None = None,
    registry: Registry | None = None,
    ledger: Ledger | None = None,
    fetcher: MediaFetcher | None = None,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
) -> RoundResult:
    """Run one round for ``request.project`` (see the module docstring).

    Args:
        settings: Registry, Label Studio, media, device and round settings.
        request: Project, trigger, stages, and whether to promote at all.
        holder: The lock holder id (the Celery task id, or :func:`state.locks.cli_holder`).
        locks: The round locks.
        source: Label Studio (default: the SDK with the settings' URL and key).
        registry: Default: the registry at ``settings.models_dir``.
        ledger: Default: the ledger from the settings.
        fetcher: Default: a :class:`MediaFetcher` from the settings.
        cache: Default: the feature cache from the settings.
        progress: ``progress(phase, done, total)``.

    Returns:
        What happened; ``status`` is ``busy`` when another round holds the lock.
    """
    project = request.project
    registry = registry or Registry(settings.models_dir, settings.base_model)
    other = locks.claim(project, holder, settings.round_lock_heartbeat_s)
    if other is not None:
        current = registry.current(project).version
        return _result(
            project, "", current, "busy", f"another round ({other}) is queued or running for project {project}"
        )
    owned: list[Any] = []
    try:
        with Heartbeat(locks, project, holder, settings.round_lock_heartbeat_s) as beat:
            if ledger is None:
                ledger = open_ledger(settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix)
                owned.append(ledger)
            if fetcher is None:
                fetcher = MediaFetcher(settings)
                owned.append(fetcher)
            if cache is None:
                cache = FeatureCache(settings.feature_cache_dir, settings.feature_cache_max_bytes)
                owned.append(cache)
            run = _Round(settings, request, registry, ledger, fetcher, cache, source, progress, beat)
            return run.run()
    finally:
        for resource in owned:
            with contextlib.suppress(Exception):
                resource.close()


class _Round:
    """One round's steps, holding what they share (the lock is held by the caller)."""

    def __init__(
        self,
        settings: Settings,
        request: RoundRequest,
        registry: Registry,
        ledger: Ledger,
        fetcher: MediaFetcher,
        cache: FeatureCache,
        source: AnnotationSource | None,
        progress: Progress | None,
        beat: Heartbeat,
    ) -> None:
        self.settings, self.request, self.registry, self.ledger = settings, request, registry, ledger
        self.fetcher, self.cache, self.beat = fetcher, cache, beat
        self._source = source
        self.report = progress or (lambda phase, done, total: None)
        self.project = request.project
        self.paths = RoundPaths(settings.models_dir, self.project)
        self.started = dt.datetime.now(dt.UTC)
        self.counts: dict[str, int] = {}
        self.logged = False

    @property
    def source(self) -> AnnotationSource:
        """Label Studio; made on first use, so a missing API key fails (and is recorded) in the round."""
        if self._source is None:
            # An export of a large project takes a while: 300 s per request, not the client's 30.
            self._source = LabelStudioClient(
                self.settings.label_studio_url, self.settings.label_studio_api_key.get_secret_value(), timeout=300.0
            )
        return self._source

    def run(self) -> RoundResult:
        _clean_leftovers(self.paths)
        round_id = _next_round(self.paths, self.registry)
        watermark = self.ledger.watermark(self.project)
        self.counts["new_corrections"] = self.ledger.count_since_last_round(self.project)
        current = self.registry.current(self.project)
        logger.info(
            "project %s: round %s (%s) starts from %s", self.project, round_id, self.request.trigger, current.version
        )
        try:
            return self._attempt(round_id, watermark, current)
        except Exception as exc:
            # Recorded, then raised as before: a failed round is in the round log (`round status`,
            # the agent) and fails its task (the workers' round counter counts it as failed).
            if not self.logged:
                self._record_failure(round_id, current, exc)
            raise

    def _attempt(self, round_id: str, watermark: int, current: VersionRecord) -> RoundResult:
        try:
            data = self._dataset()
            parent = _load(current.checkpoint, self.settings.device)
            outcome = run_round(
                parent,
                data,
                round_config(self.settings, self.request.stages, self.project),
                teacher=self._teacher(current, parent),
                features_fn=cached_features(self.cache),
                progress=self.report,
            )
        except InsufficientDataError as exc:
            result = _result(self.project, round_id, current.version, "skipped", exc.message, counts=self.counts)
            self._finish(round_id, watermark, result)
            return result
        self.counts.update(outcome.data_summary)
        return self._conclude(round_id, watermark, current, outcome)

    def _dataset(self) -> RoundData:
        self.report("export", 0, 3)
        # The one parser: the label set a round trains is the one /setup and /predict serve.
        vocab, labels = round_labels(self.source.label_config(self.project))
        history = LabelHistory(self.paths.state / "labels.json").update(vocab.labels)
        self.report("export", 1, 3)
        tasks = self.source.export(self.project)
        self.report("export", 2, 3)
        predictions = prediction_index(self.source.predictions(self.project))
        self.report("export", 3, 3)
        exported, skipped = exported_tasks(tasks, predictions, vocab, history)
        self.counts.update({f"skipped_{k}": v for k, v in skipped.items()})
        stored, fetched = fetch_images(
            exported,
            self.fetcher,
            self.settings.home / "round-images",
            cache=self.cache,
            max_pixels=self.settings.media_max_pixels,
            progress=lambda done, total: self.report("images", done, total),
        )
        self.counts.update(
            {
                "images_downloaded": fetched.downloaded,
                "images_reused": fetched.reused,
                "images_failed": len(fetched.failed),
            }
        )
        by_task = {s.task_id: s for s in stored}
        annotations = [
            AnnotatedImage(
                key=t.annotation.key,
                item=by_task[t.task_id].content_hash,
                positives=t.annotation.positives,
                hard_negatives=t.annotation.hard_negatives,
                shown=t.annotation.shown,
                annotation_id=t.annotation.annotation_id,
            )
            for t in exported
            if t.task_id in by_task
        ]
        files = {str(s.task_id): s.path for s in stored}
        return _round_data(annotations, files, labels, self.settings, self.project)

    def _teacher(self, current: VersionRecord, parent: LoadedModel) -> Any:
        if "stage1" not in (self.request.stages or self.settings.round_stages):
            return None
        if current.is_base:
            return parent.model.backbone  # frozen inside train_stage1; the parent only evaluates
        # Stage 1 distils onto the pretrained base, not onto the previous round's model.
        return _load(self.registry.base_record().checkpoint, self.settings.device).model.backbone

    def _conclude(self, round_id: str, watermark: int, current: VersionRecord, outcome: Any) -> RoundResult:
        self.report("save", 0, 3)
        version = f"mkt-p{self.project}-{round_id}"
        staging = self.paths.staging / f"{round_id}-{uuid.uuid4().hex[:8]}"
        outcome.save_candidate(
            staging,
            version=version,
            round_id=round_id,
            parent_version=current.version,
            extra={"project": self.project, "trigger": self.request.trigger},
        )
        record = self.registry.register(
            staging,
            parent=current.version,
            project=self.project,
            round_id=round_id,
            metrics=outcome.sidecar_metrics(),
            manifest_hash=outcome.manifest_hash,
            move=True,
        )
        shutil.rmtree(staging, ignore_errors=True)
        self.report("save", 1, 3)
        promote = outcome.decision.promote and self.request.promote
        reason = outcome.decision.reason
        if promote and self.beat.lost:
            promote, reason = False, f"{reason}; not promoted: the round lost its lock to another round"
        elif outcome.decision.promote and not self.request.promote:
            reason = f"{reason}; not promoted: the request asked for evaluation only"
        # The report is written before the pointer moves, so it exists once the version serves.
        serving = record.version if promote else current.version
        report = write_round_report(
            outcome,
            self.paths.reports / round_id,
            title=f"Project {self.project}, round {round_id}",
            context={
                "project": self.project,
                "round": round_id,
                "trigger": self.request.trigger,
                "started": self.started.isoformat(timespec="seconds"),
                "model in service before": current.version,
                "candidate": record.version,
                "model in service after": serving,
                "new corrections since the last round": self.counts.get("new_corrections"),
                "images that could not be fetched": self.counts.get("images_failed"),
            },
        )
        self._add_effort(report, serving)
        if promote:
            self.registry.promote(self.project, record.version)
        self.report("save", 2, 3)
        result = _result(
            self.project,
            round_id,
            serving,
            "promoted" if promote else "kept",
            reason,
            candidate_version=record.version,
            metrics=outcome.sidecar_metrics(),
            report_path=str(report),
            counts=self.counts,
        )
        self._finish(round_id, watermark, result)
        self.report("save", 3, 3)
        return result

    def _add_effort(self, report: Path, serving: str) -> None:
        # The annotators' edits so far, by model version; never a reason to fail the round.
        try:
            add_effort_section(self.ledger, self.project, report, serving, self.settings.edit_costs(self.project))
        except Exception as exc:
            logger.warning("project %s: the effort section of the round report failed: %s", self.project, exc)

    def _finish(self, round_id: str, watermark: int, result: RoundResult) -> None:
        self.ledger.record_round(self.project, round_id, watermark)
        self._append_log({**result.model_dump(mode="json"), "trigger": self.request.trigger, "watermark": watermark})
        logger.info("project %s: round %s %s: %s", self.project, round_id, result.status, result.reason)

    def _record_failure(self, round_id: str, current: VersionRecord, exc: Exception) -> None:
        """Append a ``failed`` line to the round log: the reason, when, and the version it tried to make.

        The ledger's round watermark does not move: the corrections still count as new, so the
        next round (after the fix) learns from them.
        """
        message = getattr(exc, "message", None)
        reason = message if isinstance(message, str) and message else f"{type(exc).__name__}: {exc}"
        entry = {
            "project": self.project,
            "round_id": round_id,
            "status": "failed",
            "promoted": False,
            "reason": reason,
            "error": type(exc).__name__,
            "attempted_version": f"mkt-p{self.project}-{round_id}",
            "candidate_version": None,
            "current_version": current.version,
            "metrics": {},
            "report_path": None,
            "counts": self.counts,
            "trigger": self.request.trigger,
        }
        try:
            self._append_log(entry)
        except OSError as log_exc:  # the round's own error matters more than the log's
            logger.error("project %s: could not record the failed round %s: %s", self.project, round_id, log_exc)
        logger.error("project %s: round %s failed: %s", self.project, round_id, reason)

    def _append_log(self, entry: dict[str, Any]) -> None:
        entry = {
            **entry,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        append_round_log(self.paths.models_dir, self.project, entry)
        self.logged = True


@shared_task(bind=True, name=TRAIN_ROUND, acks_late=True)  # type: ignore[untyped-decorator]
def train_round(self: Any, **payload: Any) -> dict[str, Any]:
    """Run a fine-tuning round (:class:`~state.contracts.RoundRequest` fields as kwargs).

    The task's id is the lock holder: the process that queued it took the project's lock for
    that id, and this task claims it with the short heartbeat TTL. Re-running it (a redelivery
    after its worker died) runs a fresh round: nothing of the dead one was registered.

    Returns:
        A :class:`~state.contracts.RoundResult` as JSON.
    """
    try:
        request = RoundRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(
            "the RoundRequest payload is invalid",
            why=str(exc).replace("\n", "; "),
            fix="send RoundRequest(...).model_dump(mode='json') as the task's keyword arguments",
        ) from None
    from workers.beat import locks_for

    settings = settings_of(self.app)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    locks = locks_for(settings)
    started = time.perf_counter()
    try:
        result = run_project_round(settings, request, holder=str(self.request.id or uuid.uuid4().hex), locks=locks)
    except AssistantError as exc:
        # A user-facing failure (a bad config, a broken checkpoint): fail the task with its message.
        raise RequestError(f"the round of project {request.project} failed", why=exc.message) from exc
    finally:
        locks.client.close()
    logger.info("round of project %s: %s after %.0f s", request.project, result.status, time.perf_counter() - started)
    return result.model_dump(mode="json")
