"""The agent's whole loop on the benchmark world, against a fixed schedule: mAP against annotation effort.

A simulated project, looked at once per **tick** (a simulated hour):

1. tasks arrive in ``imports`` batches (the first at the start, the others as the budget is spent);
   the ``novel_labels`` join the labeling config when ``novel_at`` of the budget is spent;
2. the **agent** looks at the project (an :class:`~assistant.agent_policy.Observation` built from the
   simulated state), decides with the production :class:`~assistant.agent_policy.Policy`, and carries
   the decisions out in simulation: pre-annotation, re-scoring and re-prediction with the model in
   service, rounds with :func:`assistant.rounds.run_round` (the production round), selection with a
   registered strategy (:mod:`assistant.selection`), review flags with
   :func:`assistant.label_quality.review_labels`. Its decisions form a log, as in production;
3. the **annotator** (:class:`~benchworld.simulation.annotator.SimulatedAnnotator`) labels
   ``annotations_per_tick`` tasks: the agent's queue first, then the other unlabeled tasks in import
   order. It starts from the task's latest prediction, so its **effort** is the tag edits it makes:
   true tags it adds plus predicted tags it removes (a perfect pre-annotation costs 0 edits).

The **fixed schedule** is the baseline: every imported batch is pre-annotated once, when it arrives,
with the base model (novel labels added later are never pre-annotated), tasks are labeled in import
order, and one round runs at the end on every annotation.

Both runs meet the same tasks, the same annotator and the same budget. The curves are the test mAP of
the model in service (the world's test stream, over the final options, never used by a decision)
against annotations and against cumulative edits; :class:`AgentSimResult` summarises the final mAP, the
mean mAP over the budget (the area under the curve, normalised) and the edits per annotation.
With ``final_round`` the agent's schedule fires once when the budget is spent (a nightly round), so
both runs end having trained on every annotation.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from assistant.agent_policy import (
    PREDICTION_ACTIONS,
    Budget,
    Decision,
    Flag,
    LastRound,
    Memory,
    Observation,
    Policy,
    PolicyConfig,
)
from assistant.backbone import Backbone
from assistant.checkpoint import LoadedModel
from assistant.config import Stage1Config, Stage2Config
from assistant.corrections import AnnotatedImage
from assistant.data import ArrayImageDataset
from assistant.errors import ConfigError
from assistant.evaluate import per_label_ap
from assistant.inference import Tagger
from assistant.label_quality import review_labels
from assistant.labels import LabelSet
from assistant.plots import plot_learning_curves
from assistant.rounds import InsufficientDataError, RoundConfig, RoundData, run_round, split_annotations
from assistant.selection import SelectionPool, create_strategy
from benchworld.simulation.annotator import LabeledImages, SimulatedAnnotator, annotator_for, render_labeled
from benchworld.simulation.features import CachedFeatures
from benchworld.simulation.serving import EffortLog, GuardEvent, ProjectServing, Served, ServingConfig
from benchworld.world.config import Stream, WorldConfig
from benchworld.world.vocabulary import default_vocabulary
from preannotation import expected_cost, scratch_cost

__all__ = [
    "AGENT_ROUND",
    "AgentSimConfig",
    "AgentSimResult",
    "CurvePoint",
    "RunSummary",
    "plot_agent_simulation",
    "quick_config",
    "simulate_agent",
]

logger = logging.getLogger(__name__)

#: ``progress(what, done, total)``.
Progress = Callable[[str, int, int], None]

# The production round scaled to 2 cores, as the active-learning simulation scales it: 4 stage-1
# epochs (validation kept epochs 2-3 of 8 in trial rounds of 100-400 images), stage 2 as in production.
AGENT_ROUND = RoundConfig(
    stage1=Stage1Config(epochs=4, batch_size=32, warmup_epochs=1.0, distill_weight=0.3),
    stage2=Stage2Config(epochs=4, batch_size=32),
)
_T0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
_TICK = dt.timedelta(hours=1)


@dataclass(frozen=True)
class AgentSimConfig:
    """The simulated project (module docstring).

    Attributes:
        pool_images: Tasks the project receives in all (world train-stream images).
        imports: Import batches of equal size.
        budget: Annotations in all.
        annotations_per_tick: Annotations between two looks of the agent.
        initial_labels: The first options (default: the world's 49 seen labels).
        novel_labels: Labels added mid-way (unseen by every base model).
        novel_at: Share of the budget spent when they are added.
        policy: The agent's policy settings.
        final_round: The agent's schedule fires once when the budget is spent.
        round: Round settings (both runs).
        heldout_fraction: Held-out share of the annotations (rounds' evaluation).
        val_fraction: Validation share (epoch selection).
        test_images: World test images of the curves.
        miss_rate: Probability that the annotator leaves a true tag unticked.
        automation_bias: Probability that the annotator keeps a wrong tag it was shown.
        serving: How both runs pre-annotate: the product's rule, refit and guard.
        seed: Seed of the pool slice, the split, the annotator and the strategies.
        world: The world.
    """

    pool_images: int = 600
    imports: int = 2
    budget: int = 400
    annotations_per_tick: int = 25
    initial_labels: tuple[str, ...] = ()
    novel_labels: tuple[str, ...] = ("zebra", "pink", "sand")
    novel_at: float = 0.6
    policy: PolicyConfig = field(
        default_factory=lambda: PolicyConfig(round_threshold=100, queue_low_water=25, batch_size=75)
    )
    final_round: bool = True
    round: RoundConfig = AGENT_ROUND
    heldout_fraction: float = 0.2
    val_fraction: float = 0.1
    test_images: int = 1000
    miss_rate: float = 0.0
    # Anchoring on the suggestion: studies of pre-annotation report that annotators keep some
    # wrong suggested labels; 5% of the wrong shown tags is the default.
    automation_bias: float = 0.05
    serving: ServingConfig = ServingConfig()
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)

    def options(self) -> tuple[str, ...]:
        """The initial options."""
        return self.initial_labels or default_vocabulary().seen_names

    def check(self) -> None:
        """Raise :class:`~assistant.errors.ConfigError` on unusable settings."""
        names = set(default_vocabulary().names)
        unknown = [n for n in (*self.options(), *self.novel_labels) if n not in names]
        sizes_ok = 1 <= self.budget <= self.pool_images and self.imports >= 1 and self.annotations_per_tick >= 1
        if unknown or not sizes_ok or not 0 <= self.novel_at <= 1:
            raise ConfigError(
                "invalid agent simulation settings",
                why=f"unknown labels {unknown[:5]}; budget {self.budget}, pool {self.pool_images}, "
                f"imports {self.imports}, novel_at {self.novel_at}",
                fix="use world labels, a pool at least as large as the budget, one import or more, novel_at in [0, 1]",
            )


def quick_config(seed: int = 0) -> AgentSimConfig:
    """A configuration that runs in minutes on 2 CPU cores (``assistant simulate agent --quick``)."""
    return AgentSimConfig(
        pool_images=400,
        budget=240,
        annotations_per_tick=20,
        policy=PolicyConfig(round_threshold=60, queue_low_water=20, batch_size=60),
        round=dataclasses.replace(AGENT_ROUND, stage1=dataclasses.replace(AGENT_ROUND.stage1, epochs=3)),
        test_images=500,
        seed=seed,
    )


@dataclass(frozen=True)
class CurvePoint:
    """The model in service after some effort.

    Attributes:
        annotations: Annotations so far.
        edits: Tag edits so far: wrong tags shown (removes) plus true tags not shown (adds).
        scratch: The edits the same annotations would have taken from scratch (their true tags).
        map: Test mAP (percent) over the final options.
        version: The model in service.
        errors: Wrong shown tags the annotator kept so far (label errors pre-annotation introduced).
    """

    annotations: int
    edits: int
    scratch: int
    map: float
    version: str
    errors: int = 0

    @property
    def ratio(self) -> float | None:
        """Cumulative edits against from scratch, in counts (None before the first true tag)."""
        return self.edits / self.scratch if self.scratch else None


@dataclass
class RunSummary:
    """One run (the agent's or the fixed schedule's).

    Attributes:
        name: ``agent`` or ``fixed``.
        points: The curve, one point per tick (and one after a final round).
        rounds: ``(annotations, round, promoted, held-out delta)`` of every round.
        decisions: The agent's decision log (``{"tick", "action", "status", "reason", "outcome"}``).
        novel_preannotated: Novel tags pre-annotated (shown to the annotator), and how many were right.
        flagged: Annotations queued for review.
        effort: Every annotation's edits against from scratch.
        guard: The guard's trips and resumptions.
        refits: Refits of the project's calibration.
        seconds: Wall time.
    """

    name: str
    points: list[CurvePoint] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    novel_preannotated: tuple[int, int] = (0, 0)
    flagged: int = 0
    effort: EffortLog = field(default_factory=EffortLog)
    guard: list[GuardEvent] = field(default_factory=list)
    refits: int = 0
    seconds: float = 0.0

    @property
    def final_map(self) -> float:
        """mAP of the model in service at the end."""
        return self.points[-1].map

    @property
    def edits(self) -> int:
        """Tag edits in all."""
        return self.points[-1].edits

    def max_checkpoint_ratio(self) -> float | None:
        """The highest cumulative (cost-weighted) edits-to-scratch ratio over the checkpoints."""
        ratios = [r for r in (self.effort.cumulative_ratio(p.annotations) for p in self.points) if r is not None]
        return max(ratios) if ratios else None

    def mean_map(self) -> float:
        """The mAP averaged over the annotations spent (area under the mAP-vs-annotations curve / budget)."""
        xs = np.array([p.annotations for p in self.points], dtype=np.float64)
        ys = np.array([p.map for p in self.points], dtype=np.float64)
        if xs[-1] <= xs[0]:
            return float(ys[-1])
        # A step function: each model serves until the next point's annotations.
        widths = np.diff(xs)
        return float((ys[:-1] * widths).sum() / widths.sum())


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


@dataclass
class AgentSimResult:
    """Both runs and their comparison."""

    config: AgentSimConfig
    agent: RunSummary
    fixed: RunSummary

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per run: mAP, edits against from scratch (whole run, last quarter, worst checkpoint), rounds."""
        out = {}
        for run in (self.agent, self.fixed):
            n = max(1, run.points[-1].annotations)
            whole, last = run.effort.totals(), run.effort.last_quarter()
            out[run.name] = {
                "final_map": round(run.final_map, 2),
                "mean_map": round(run.mean_map(), 2),
                "edits": run.edits,
                "edits_per_annotation": round(run.edits / n, 3),
                "scratch_per_annotation": _r(whole.scratch_per_task),
                "edits_vs_scratch": _r(whole.cost_ratio(run.effort.costs)),
                "last_quarter_vs_scratch": _r(last.cost_ratio(run.effort.costs)),
                "max_checkpoint_vs_scratch": _r(run.max_checkpoint_ratio()),
                "shown_per_annotation": _r((whole.kept + whole.removed) / whole.tasks if whole.tasks else None),
                "precision_shown": _r(whole.precision),
                "costlier_share": _r(whole.costlier_share),
                "errors_introduced": sum(run.effort.errors),
                "refits": run.refits,
                "guard_trips": sum(1 for e in run.guard if e.tripped),
                "rounds": len(run.rounds),
                "promotions": sum(1 for r in run.rounds if r["promoted"]),
                "novel_tags_preannotated": run.novel_preannotated[0],
                "novel_tags_right": run.novel_preannotated[1],
                "flagged_for_review": run.flagged,
                "seconds": round(run.seconds, 1),
            }
        return out

    def table(self) -> str:
        """Both curves side by side, per tick (edits, from scratch, their ratio, mAP), then the summary."""

        def cells(p: CurvePoint | None) -> str:
            if p is None:
                return f"{'':>6} {'':>7} {'':>5} {'':>6}"
            ratio = "-" if p.ratio is None else f"{p.ratio:.2f}"
            return f"{p.edits:>6} {p.scratch:>7} {ratio:>5} {p.map:>6.2f}"

        head = f"{'edits':>6} {'scratch':>7} {'x':>5} {'mAP':>6}"
        lines = [f"{'':>5}  {'agent':^27}  {'fixed schedule':^27}", f"{'annot':>5}  {head}  {head}", "-" * 64]
        fixed = {p.annotations: p for p in self.fixed.points}
        for p in self.agent.points:
            lines.append(f"{p.annotations:>5}  {cells(p)}  {cells(fixed.get(p.annotations))}")
        seen = {q.annotations for q in self.agent.points}
        for f in (p for p in self.fixed.points if p.annotations not in seen):
            lines.append(f"{f.annotations:>5}  {cells(None)}  {cells(f)}")
        lines.append("")
        for name, s in self.summary().items():
            lines.append(
                f"{name:<6} edits {_f(s['edits_per_annotation'])} per annotation against "
                f"{_f(s['scratch_per_annotation'])} from scratch ({_f(s['edits_vs_scratch'])}x; last quarter "
                f"{_f(s['last_quarter_vs_scratch'])}x; worst checkpoint {_f(s['max_checkpoint_vs_scratch'])}x), "
                f"{_f(s['shown_per_annotation'], '.1f')} tags shown per annotation at precision "
                f"{_f(s['precision_shown'])}, {s['errors_introduced']} label errors introduced (wrong shown tags "
                f"kept), {s['refits']} calibration refits, {s['guard_trips']} guard trips"
            )
            lines.append(
                f"{'':<6} final mAP {s['final_map']:.2f}, mean mAP over the budget {s['mean_map']:.2f}, "
                f"{s['rounds']} rounds ({s['promotions']} promoted), novel tags pre-annotated "
                f"{s['novel_tags_preannotated']} ({s['novel_tags_right']} right), flagged for review "
                f"{s['flagged_for_review']}, {s['seconds']:.0f} s"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Settings, both curves, rounds, the agent's decisions, the guard's events and the summary."""
        cfg = self.config
        return {
            "settings": {
                "pool_images": cfg.pool_images,
                "imports": cfg.imports,
                "budget": cfg.budget,
                "annotations_per_tick": cfg.annotations_per_tick,
                "novel_labels": list(cfg.novel_labels),
                "novel_at": cfg.novel_at,
                "policy": cfg.policy.as_dict(),
                "final_round": cfg.final_round,
                "stages": list(cfg.round.stages),
                "stage1_epochs": cfg.round.stage1.epochs,
                "test_images": cfg.test_images,
                "miss_rate": cfg.miss_rate,
                "automation_bias": cfg.automation_bias,
                "serving": cfg.serving.as_dict(),
                "seed": cfg.seed,
            },
            "summary": self.summary(),
            "runs": {
                run.name: {
                    "points": [dataclasses.asdict(p) for p in run.points],
                    "effort": run.effort.summary(),
                    "rounds": run.rounds,
                    "decisions": run.decisions,
                    "guard": [dataclasses.asdict(e) for e in run.guard],
                }
                for run in (self.agent, self.fixed)
            },
        }


# --------------------------------------------------------------------------------------------------
# The simulated project
# --------------------------------------------------------------------------------------------------
@dataclass
class _Prediction:
    served: Served
    thresholds: NDArray[np.float64]

    @property
    def version(self) -> str:
        return self.served.version


class _Project:
    """The state both runs share the rules of: tasks, options, predictions, annotations, effort."""

    def __init__(self, cfg: AgentSimConfig, pool: LabeledImages, base: LoadedModel, annotator: SimulatedAnnotator):
        self.cfg, self.pool, self.annotator = cfg, pool, annotator
        self.service = base
        self.options: list[str] = list(cfg.options())
        self.imported: list[int] = []
        self.annotations: list[AnnotatedImage] = []
        self.labeled: set[int] = set()
        self.predictions: dict[int, _Prediction] = {}
        self.queue: list[int] = []
        self.serving = ProjectServing(cfg.serving)
        self.effort = EffortLog(cfg.serving.costs)
        self.novel_shown = self.novel_right = 0
        self.features = CachedFeatures(pool.images, cfg.round.eval_batch_size)
        self.since_round = 0
        self.tick = 0

    @property
    def now(self) -> dt.datetime:
        return _T0 + self.tick * _TICK

    def arrivals(self) -> None:
        """Import batches and the novel labels, as the budget is spent."""
        cfg, spent = self.cfg, len(self.annotations)
        per = cfg.pool_images // cfg.imports
        due = min(cfg.imports, 1 + (spent * cfg.imports) // cfg.budget)
        while len(self.imported) < min(cfg.pool_images, due * per):
            self.imported.append(len(self.imported))
        if spent >= cfg.novel_at * cfg.budget:
            self.options += [n for n in cfg.novel_labels if n not in self.options]

    @classmethod
    def start(cls, cfg: AgentSimConfig, pool: LabeledImages, base: LoadedModel) -> _Project:
        """A fresh project with the configured simulated annotator."""
        annotator = annotator_for(
            pool, cfg.world, miss_rate=cfg.miss_rate, automation_bias=cfg.automation_bias, seed=cfg.seed
        )
        return cls(cfg, pool, base, annotator)

    def unlabeled(self) -> list[int]:
        return [i for i in self.imported if i not in self.labeled]

    def has_work(self) -> bool:
        """Budget left, and a task to annotate now or still to be imported."""
        cfg = self.cfg
        return len(self.annotations) < cfg.budget and (bool(self.unlabeled()) or len(self.imported) < cfg.pool_images)

    def room(self) -> int:
        """Annotations the annotators make this tick (the budget's rest at most)."""
        return min(self.cfg.annotations_per_tick, self.cfg.budget - len(self.annotations))

    @property
    def edits(self) -> int:
        """Edits so far, against the truth."""
        return sum(t.edits for t in self.effort.tasks)

    @property
    def scratch(self) -> int:
        """What the same annotations would have taken from scratch."""
        return sum(t.scratch for t in self.effort.tasks)

    def prediction_key(self, task: int) -> str | None:
        """What a task's prediction was served with: version, options and project calibration."""
        pred = self.predictions.get(task)
        return None if pred is None else _serving_key(pred.version, pred.served.labels, pred.served.calibration)

    def current_key(self) -> str:
        """What a prediction made now would be served with."""
        return _serving_key(self.service.model.version, self.options, self.serving.calibration)

    def predict(self, tasks: Sequence[int]) -> None:
        """Pre-annotate ``tasks`` with the model in service over the current options, by the product's rule."""
        if not tasks:
            return
        tagger = Tagger(self.service, device=self.service.model.device, batch_size=256)
        rows = torch.as_tensor(list(tasks), dtype=torch.long)
        probs = tagger.probabilities(self.features.of(self.service).index(rows), self.options).astype(np.float64)
        thresholds = np.asarray(tagger.calibrator.thresholds(self.options), dtype=np.float64)
        version = self.service.model.version
        for task, row in zip(tasks, probs, strict=True):
            self.predictions[task] = _Prediction(self.serving.serve(version, self.options, row), thresholds)

    def expected_saving(self, tasks: Sequence[int]) -> dict[str, float]:
        """What the pre-annotations of ``tasks`` are expected to cost, by their own probabilities (decision log)."""
        served = [self.predictions[t].served for t in tasks if t in self.predictions]
        if not served:
            return {}
        costs = self.cfg.serving.costs
        edits = sum(expected_cost(s.probabilities, s.shown, costs) for s in served)
        scratch = sum(scratch_cost(s.probabilities, costs) for s in served)
        return {
            "expected_edits_per_task": round(edits / len(served), 3),
            "expected_scratch_per_task": round(scratch / len(served), 3),
            "expected_saving": round(1.0 - edits / scratch, 3) if scratch else 0.0,
        }

    def annotate(self, count: int) -> list[Flag]:
        """The annotator labels ``count`` tasks (queue first); returns the ratings of its annotations."""
        order = [t for t in self.queue if t not in self.labeled]
        order += [t for t in self.unlabeled() if t not in set(order)]
        flags = []
        for task in order[:count]:
            pred = self.predictions.get(task)
            shown = [t for t in (pred.served.tags if pred else ()) if t in self.options]
            annotation = self.effort.annotate(self.annotator, task, self.options, shown)
            self.annotations.append(annotation)
            self.labeled.add(task)
            self.since_round += 1
            self.serving.record(pred.served if pred else None, annotation.positives)
            novel = [t for t in shown if t in self.cfg.novel_labels]
            self.novel_shown += len(novel)
            self.novel_right += sum(t in annotation.positives for t in novel)
            if pred is not None:
                flags.append(_rate(task, annotation, pred))
        return flags

    def round_data(self) -> RoundData:
        images = self.pool.images[np.array([int(a.key) for a in self.annotations], dtype=np.int64)]
        return split_annotations(
            self.annotations,
            LabelSet(tuple(self.options)),
            lambda rows, targets: ArrayImageDataset(images[rows], targets),
            salt=f"agent-simulation-{self.cfg.seed}",
            heldout_fraction=self.cfg.heldout_fraction,
            val_fraction=self.cfg.val_fraction,
            min_val_images=self.cfg.round.min_val_images,
        )

    def train(self, teacher: Backbone, number: int, progress: Progress) -> dict[str, Any]:
        """One round on every annotation so far; promotes as production does."""
        self.since_round = 0
        try:
            outcome = run_round(
                self.service,
                self.round_data(),
                self.cfg.round,
                teacher=teacher,
                progress=lambda phase, d, t: progress(f"round {number}: {phase}", d, t),
            )
        except InsufficientDataError as exc:
            return {"round": number, "annotations": len(self.annotations), "promoted": False, "reason": exc.what}
        promoted = outcome.decision.promote
        if promoted:
            outcome.candidate.loaded.model.version = f"sim-r{number}"
            self.service = outcome.candidate.loaded
            self.serving.use_version(self.service.model.version)  # its own calibration, every tag resumed
        delta = outcome.decision.delta
        return {
            "round": number,
            "annotations": len(self.annotations),
            "promoted": promoted,
            "delta": None if not np.isfinite(delta) else round(float(delta), 2),
            "heldout_edits_vs_scratch": {
                "current": _metric(outcome.current.metrics, "edits_vs_scratch"),
                "candidate": _metric(outcome.evaluated.metrics, "edits_vs_scratch"),
            },
            "reason": outcome.decision.reason,
            "version": self.service.model.version,
        }


def _metric(metrics: dict[str, float], key: str) -> float | None:
    return round(metrics[key], 4) if key in metrics else None


def _serving_key(version: str, labels: Sequence[str], calibration: str | None) -> str:
    return f"{version}+{'|'.join(labels)}+{calibration or ''}"


def _rate(task: int, annotation: AnnotatedImage, pred: _Prediction) -> Flag:
    """The label quality of an annotation under the prediction its annotator saw (as ``agent/observe.py``)."""
    labels = pred.served.labels
    targets = np.array([[1 if label in annotation.positives else -1 for label in labels]])
    review = review_labels(pred.served.model_probabilities[None, :], targets, list(labels), pred.thresholds)
    worst = review.worst[0]
    return Flag(task, None, float(review.quality[0]), worst.describe() if worst is not None else "")


class _Evaluator:
    """Test mAP over the final options, once per model version."""

    def __init__(self, test: LabeledImages, labels: Sequence[str], batch: int) -> None:
        self.test, self.labels = test, list(labels)
        self.features = CachedFeatures(test.images, batch)
        self.targets = test.targets(self.labels)
        # Keyed by object id; the model is kept alongside, so that an id is never reused meanwhile.
        self._cache: dict[int, tuple[LoadedModel, float]] = {}

    def map(self, loaded: LoadedModel) -> float:
        key = id(loaded)
        if key not in self._cache:
            tagger = Tagger(loaded, device=loaded.model.device, batch_size=256)
            raw = tagger.raw_scores(self.features.of(loaded), self.labels)
            self._cache[key] = (loaded, 100.0 * float(np.nanmean(per_label_ap(raw, self.targets))))
        return self._cache[key][1]


# --------------------------------------------------------------------------------------------------
# The agent's run
# --------------------------------------------------------------------------------------------------
class _SimAgent:
    """The production policy over the simulated project, with an in-memory decision log."""

    def __init__(self, project: _Project, policy: Policy, teacher: Backbone, progress: Progress) -> None:
        self.p, self.policy, self.teacher, self.progress = project, policy, teacher, progress
        self.log: list[tuple[Decision, str, dict[str, Any]]] = []
        self.flags: dict[int, Flag] = {}
        self.flagged: set[int] = set()
        self.rounds: list[dict[str, Any]] = []
        self.last_round: LastRound | None = None

    def memory(self) -> Memory:
        predicted = next((d for d, s, _ in reversed(self.log) if d.action in PREDICTION_ACTIONS and s == "done"), None)
        selected = next((d for d, s, _ in reversed(self.log) if d.action == "select" and s == "done"), None)
        return Memory(
            predicted_checkpoint=str(predicted.params["checkpoint"]) if predicted else None,
            predicted_labels=tuple(predicted.params["labels"]) if predicted else None,
            predicted_calibration=predicted.params.get("calibration") if predicted else None,
            selected_version=str(selected.params["model_version"]) if selected else None,
            flagged=frozenset(self.flagged),
        )

    def observe(self, *, schedule: bool = False) -> Observation:
        p = self.p
        unlabeled = p.unlabeled()
        version = p.service.model.version
        current = p.current_key()
        unpredicted = tuple(t for t in unlabeled if p.prediction_key(t) != current)
        return Observation(
            project=1,
            now=p.now,
            checkpoint=version,
            labels=tuple(p.options),
            calibration=p.serving.calibration,
            tasks=len(p.imported),
            unlabeled=len(unlabeled),
            unpredicted=unpredicted,
            queue=sum(1 for t in p.queue if t not in p.labeled),
            new_corrections=p.since_round,
            watermark=len(p.annotations),
            last_round=self.last_round,
            schedule_fired_at=p.now if schedule else None,
            flags=tuple(self.flags.values()),
            rated=len(self.flags),
            memory=self.memory(),
            budget=Budget(rounds=0),
        )

    def step(self, *, schedule: bool = False) -> None:
        done_keys = {d.key for d, s, _ in self.log if s in ("done", "deferred")}
        for decision in self.policy.decide(self.observe(schedule=schedule)):
            if decision.key in done_keys:
                continue
            if decision.status == "deferred":
                self.log.append((decision, "deferred", {}))
                continue
            outcome = self.execute(decision)
            self.log.append((decision, "done", outcome))

    def execute(self, decision: Decision) -> dict[str, Any]:
        p = self.p
        if decision.action in PREDICTION_ACTIONS:
            todo = [t for t in p.unlabeled() if t in set(self.observe().unpredicted)]
            p.predict(todo)
            return {"posted": len(todo), "model_version": p.service.model.version, **p.expected_saving(todo)}
        if decision.action == "train":
            result = p.train(self.teacher, len(self.rounds) + 1, self.progress)
            self.rounds.append(result)
            status = "promoted" if result["promoted"] else "kept"
            self.last_round = LastRound(f"r{result['round']}", status, "agent", p.now, p.service.model.version)
            return result
        if decision.action == "select":
            p.queue = self._select(int(decision.params["k"]), str(decision.params["strategy"]), decision.key)
            return {"chosen": len(p.queue)}
        if decision.action == "review":
            tasks = [int(f["task"]) for f in decision.params["flags"]]
            self.flagged.update(tasks)
            return {"flagged": len(tasks)}
        raise ValueError(f"no simulated executor for {decision.action}")

    def _select(self, k: int, strategy: str, key: str) -> list[int]:
        p = self.p
        rows = np.array(p.unlabeled(), dtype=np.int64)
        if rows.size == 0:
            return []
        feats = p.features.of(p.service)
        tagger = Tagger(p.service, device=p.service.model.device, batch_size=256)
        probs = tagger.probabilities(feats.index(torch.from_numpy(rows)), p.options)
        seen = p.service.model.is_seen(p.options)
        glob = feats.global_emb.numpy()
        labeled = np.array(sorted(p.labeled), dtype=np.int64)
        pool = SelectionPool.from_arrays(
            probs,
            tagger.calibrator.thresholds(p.options),
            p.options,
            novel_labels=[o for o, s in zip(p.options, seen, strict=True) if not s],
            embeddings=glob[rows],
            labeled_embeddings=glob[labeled] if labeled.size else None,
            break_even=p.cfg.serving.costs.break_even,
        )
        seed = int.from_bytes(key.encode()[-4:], "little") ^ p.cfg.seed
        chosen = create_strategy(strategy, seed=seed).select(pool, min(k, rows.size))
        picked: list[int] = rows[chosen.indices].tolist()
        return picked


def _point(project: _Project, evaluator: _Evaluator) -> CurvePoint:
    service = project.service
    return CurvePoint(
        len(project.annotations),
        project.edits,
        project.scratch,
        evaluator.map(service),
        service.model.version,
        project.annotator.introduced_errors,
    )


def _finish(run: RunSummary, project: _Project, started: float) -> RunSummary:
    run.novel_preannotated = (project.novel_shown, project.novel_right)
    run.effort = project.effort
    run.guard = list(project.serving.events)
    run.refits = project.serving.refits
    run.seconds = time.perf_counter() - started
    return run


def _run_agent(
    cfg: AgentSimConfig,
    base: LoadedModel,
    pool: LabeledImages,
    evaluator: _Evaluator,
    teacher: Backbone,
    progress: Progress,
) -> RunSummary:
    started = time.perf_counter()
    project = _Project.start(cfg, pool, base)
    agent = _SimAgent(project, Policy(cfg.policy), teacher, progress)
    run = RunSummary("agent")
    while project.has_work():
        project.arrivals()
        agent.step()
        run.points.append(_point(project, evaluator))
        for flag in project.annotate(project.room()):
            agent.flags[flag.task] = flag
        project.tick += 1
        progress("agent: annotations", len(project.annotations), cfg.budget)
    project.arrivals()
    agent.step(schedule=cfg.final_round)
    run.points.append(_point(project, evaluator))
    run.rounds = agent.rounds
    run.decisions = [
        {"at": d.saw.get("at"), "action": d.action, "status": s, "reason": d.reason, "outcome": o}
        for d, s, o in agent.log
    ] + [
        # The guard acts on serving, not through the policy; its trips and resumptions join the log.
        {
            "at": f"annotation {e.annotations}",
            "action": "guard",
            "status": "tripped" if e.tripped else "resumed",
            "reason": f"'{e.tag}': {e.reason}",
            "outcome": {"version": e.version},
        }
        for e in project.serving.events
    ]
    run.flagged = len(agent.flagged)
    return _finish(run, project, started)


def _run_fixed(
    cfg: AgentSimConfig,
    base: LoadedModel,
    pool: LabeledImages,
    evaluator: _Evaluator,
    teacher: Backbone,
    progress: Progress,
) -> RunSummary:
    started = time.perf_counter()
    project = _Project.start(cfg, pool, base)
    run = RunSummary("fixed")
    while project.has_work():
        project.arrivals()
        project.predict([t for t in project.imported if t not in project.predictions])  # each import once
        run.points.append(_point(project, evaluator))
        project.annotate(project.room())
        project.tick += 1
        progress("fixed: annotations", len(project.annotations), cfg.budget)
    run.points.append(_point(project, evaluator))
    run.rounds = [project.train(teacher, 1, progress)]
    run.points.append(_point(project, evaluator))
    return _finish(run, project, started)


def simulate_agent(
    base: LoadedModel,
    cfg: AgentSimConfig,
    *,
    teacher: Backbone | None = None,
    progress: Progress | None = None,
) -> AgentSimResult:
    """Run the agent and the fixed schedule on the same simulated project (module docstring).

    Args:
        base: The model in service at the start of both runs (never modified).
        cfg: The project.
        teacher: The frozen base backbone for stage-1 distillation (default: a frozen copy of ``base``'s).
        progress: ``progress(what, done, total)``.
    """
    cfg.check()
    report = progress or (lambda what, done, total: None)
    pool = render_labeled(
        Stream.TRAIN,
        cfg.pool_images,
        cfg.world,
        first=cfg.seed * cfg.pool_images,
        progress=lambda d, t: report("pool", d, t),
    )
    test = render_labeled(Stream.TEST, cfg.test_images, cfg.world, progress=lambda d, t: report("test set", d, t))
    if teacher is None:
        teacher = copy.deepcopy(base.model.backbone).eval().requires_grad_(False)
    evaluator = _Evaluator(test, [*cfg.options(), *cfg.novel_labels], cfg.round.eval_batch_size)
    agent = _run_agent(cfg, base, pool, evaluator, teacher, report)
    fixed = _run_fixed(cfg, base, pool, evaluator, teacher, report)
    return AgentSimResult(cfg, agent, fixed)


def plot_agent_simulation(result: AgentSimResult, folder: Path) -> list[Path]:
    """The figures of a run, into ``folder``.

    - ``agent-vs-fixed.png``: test mAP against annotations;
    - ``agent-vs-fixed-edits.png``: test mAP against tag edits, and (dashed) against the edits the
      same annotations would have taken from scratch;
    - ``agent-vs-fixed-effort.png``: cumulative edits divided by the edits of labeling the same
      tasks from scratch (1.0, dashed), at every checkpoint (the table's ``x`` column).
    """
    runs = (result.agent, result.fixed)
    name = {"agent": "agent: the agent", "fixed": "fixed: pre-annotate once, train once at the end"}
    title = "The agent against a fixed schedule: test mAP of the model in service"
    by_annotations = {name[r.name]: [(float(p.annotations), p.map) for p in r.points] for r in runs}
    by_edits: dict[str, list[tuple[float, float]]] = {}
    same: dict[str, str] = {}
    for r in runs:
        by_edits[name[r.name]] = [(float(p.edits), p.map) for p in r.points]
        scratch = f"{r.name}: the same tasks from scratch"
        by_edits[scratch], same[scratch] = [(float(p.scratch), p.map) for p in r.points], name[r.name]
    effort = {
        f"{r.name}: edits from its pre-annotations": [
            (float(p.annotations), p.ratio) for p in r.points if p.ratio is not None
        ]
        for r in runs
    }
    last = max(p.annotations for r in runs for p in r.points)
    effort["labeling the same tasks from scratch"] = [(0.0, 1.0), (float(last), 1.0)]
    return [
        plot_learning_curves(by_annotations, folder / "agent-vs-fixed.png", "annotations", "test mAP (%)", title),
        plot_learning_curves(
            by_edits,
            folder / "agent-vs-fixed-edits.png",
            "tag edits (annotation effort)",
            "test mAP (%)",
            title,
            dashed=list(same),
            color_of=same,
        ),
        plot_learning_curves(
            effort,
            folder / "agent-vs-fixed-effort.png",
            "annotations",
            "cumulative edits / from scratch",
            "Edits from pre-annotations against labeling the same tasks from scratch",
            dashed=["labeling the same tasks from scratch"],
        ),
    ]
