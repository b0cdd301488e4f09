"""Fakes for the app's contract tests: a dispatcher that answers like workers, and an app builder."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from backends.app import create_app
from backends.dispatch import DispatchOutcome, PredictJob, RoundTicket, Trigger
from backends.presence import QueueConsumers
from backends.settings import BackendSettings
from backends.state import MemoryState
from state.contracts import ImageFailure, ImageScores, PredictRequest, PredictResult
from state.ledger import Ledger, open_ledger
from state.registry import Registry


def pseudo_score(key: str, label: str) -> float:
    """A deterministic score in [0, 1) per (image, label), like a model would give."""
    digest = hashlib.sha256(f"{key}|{label}".encode()).digest()
    return digest[0] / 256


def fake_result(
    request: PredictRequest,
    *,
    version: str | None = None,
    failed: Mapping[str, str] | None = None,
    unseen: frozenset[str] = frozenset(),
    score: Callable[[str, str], float] = pseudo_score,
) -> PredictResult:
    """What a worker answers: pseudo-random scores, thresholds 0.5, the pinned version."""
    items = []
    for ref in request.images:
        if failed and ref.key in failed:
            error = ImageFailure(reason=failed[ref.key], message=f"{ref.url}: {failed[ref.key]}")
            items.append(ImageScores(key=ref.key, task_id=ref.task_id, error=error))
        else:
            scores = [score(ref.key, label) for label in request.labels]
            items.append(ImageScores(key=ref.key, task_id=ref.task_id, scores=scores))
    return PredictResult(
        model_version=version or request.model_version or "base",
        labels=list(request.labels),
        seen=[label not in unseen for label in request.labels],
        thresholds=[0.5] * len(request.labels),
        items=items,
    )


@dataclass
class FakeDispatcher:
    """Answers chunks at once (inline), or leaves them to the "background", or fails them.

    Attributes:
        background_chunks: Chunk indexes to leave to the background.
        failed_chunks: Chunk indexes whose predict task "fails".
        failed_images: Image key → failure reason.
        version: Overrides the version the "worker" scores with (None: the pinned one).
        block: When set, ``predict`` waits for it (concurrency tests).
        raise_on_predict: An exception to raise from ``predict``.
    """

    state: MemoryState = field(default_factory=MemoryState)
    background_chunks: set[int] = field(default_factory=set)
    failed_chunks: set[int] = field(default_factory=set)
    failed_images: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    block: threading.Event | None = None
    raise_on_predict: Exception | None = None
    jobs: list[tuple[PredictJob, float]] = field(default_factory=list)
    rounds: list[tuple[int, str]] = field(default_factory=list)
    finished_rounds: set[str] = field(default_factory=set)
    counts: list[int] = field(default_factory=list)
    raise_on_count: Exception | None = None

    def count_effort(self, project: int) -> None:
        if self.raise_on_count is not None:
            raise self.raise_on_count
        self.counts.append(project)

    def predict(self, job: PredictJob, *, wait_s: float) -> DispatchOutcome:
        self.jobs.append((job, wait_s))
        if self.raise_on_predict is not None:
            raise self.raise_on_predict
        if self.block is not None:
            self.block.wait(timeout=30)
        outcome = DispatchOutcome()
        for chunk in job.chunks:
            if wait_s <= 0 or chunk.index in self.background_chunks:
                outcome.background.append(chunk.index)
                continue
            self.state.release(job.project, job.model_version, chunk.task_ids)
            if chunk.index in self.failed_chunks:
                outcome.failed[chunk.index] = "FAILURE: boom"
                continue
            outcome.inline[chunk.index] = fake_result(chunk.request, version=self.version, failed=self.failed_images)
        return outcome

    def queue_round(
        self, project: int, *, trigger: Trigger = "start_training", request_id: str | None = None
    ) -> RoundTicket:
        task_id = uuid.uuid4().hex
        holder = self.state.acquire_round_lock(project, task_id, 60)
        if holder is not None and holder not in self.finished_rounds:
            return RoundTicket("already_queued", holder, project)
        if holder is not None:
            self.state.replace_round_lock(project, holder, task_id, 60)
        self.rounds.append((project, trigger))
        return RoundTicket("queued", task_id, project)

    @property
    def chunks(self) -> Iterator[Any]:
        for job, _ in self.jobs:
            yield from job.chunks


@dataclass
class Harness:
    """An app over fakes, and handles on what it writes."""

    app: FastAPI
    dispatcher: FakeDispatcher
    ledger: Ledger
    registry: Registry
    settings: BackendSettings


def make_harness(
    tmp_path: Path,
    *,
    dispatcher: FakeDispatcher | None = None,
    consumers: QueueConsumers | None = None,
    **settings: Any,
) -> Harness:
    """A backend app with a fake dispatcher, a real registry (base model without sidecar) and ledger."""
    base = tmp_path / "base-model"
    base.mkdir(exist_ok=True)
    cfg = BackendSettings(home=tmp_path / "home", base_model=str(base), **settings)
    dispatcher = dispatcher or FakeDispatcher()
    registry = Registry(cfg.models_dir, cfg.base_model)
    ledger = open_ledger(None, home=cfg.home)
    app = create_app(cfg, dispatcher=dispatcher, registry=registry, ledger=ledger, consumers=consumers)
    return Harness(app, dispatcher, ledger, registry, cfg)
