"""Offline fine-tuning rounds on the benchmark world: a simulated project from first annotation to N rounds.

Each round plays what a Label Studio project does:

1. (in round ``novel_round``) new labels are added to the project's options;
2. a selector picks ``images_per_round`` unannotated pool images (default: the next ones; the
   world's images are i.i.d., so pool order is a random sample; active learning plugs in here);
3. the model in service pre-annotates them as the product does (the break-even rule of the edit
   costs, the project's calibration refit every ``refit_every`` annotations, the per-tag guard:
   :mod:`benchworld.simulation.serving`; each task is served when it is annotated, so a refit
   reaches the rest of the round's tasks at once) and the
   :class:`~benchworld.simulation.annotator.SimulatedAnnotator` corrects them; its edits are
   counted against labeling the same tasks from scratch;
4. every annotation so far becomes round data by the production rule
   (:func:`~assistant.corrections.correction_targets`, :func:`~assistant.corrections.assign_split`);
5. :func:`assistant.rounds.run_round` trains a candidate, compares it with the model in service
   on the held-out annotations and promotes it or not.

Two curves are measured besides the round's own decision figures, both for the model in service
after each round: mAP on the world's test stream (complete labels, never seen by any model nor
used for any decision) for the initial labels ("seen") and the labels added mid-way ("novel");
and mAP on the final round's held-out annotations (fixed set, never trained on). Row 0 is the
base model before any round, so the novel curve starts at its zero-shot level.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistant.backbone import Backbone
from assistant.checkpoint import LoadedModel
from assistant.corrections import AnnotatedImage
from assistant.data import ArrayImageDataset
from assistant.errors import ConfigError
from assistant.evaluate import per_label_ap
from assistant.inference import Tagger
from assistant.labels import LabelSet
from assistant.plots import plot_learning_curves
from assistant.rounds import InsufficientDataError, RoundConfig, RoundData, RoundOutcome, run_round, split_annotations
from benchworld.simulation.annotator import LabeledImages, SimulatedAnnotator, annotator_for, render_labeled
from benchworld.simulation.features import encode_images
from benchworld.simulation.serving import EffortLog, ProjectServing, ServingConfig
from benchworld.world.config import Stream, WorldConfig
from benchworld.world.vocabulary import default_vocabulary

__all__ = [
    "RoundObserver",
    "RoundRow",
    "Selector",
    "SimulationConfig",
    "SimulationProgress",
    "SimulationResult",
    "SimulationState",
    "next_unlabeled",
    "plot_simulation",
    "plot_simulation_effort",
    "simulate_rounds",
]

logger = logging.getLogger(__name__)

#: ``progress(what, done, total)``.
SimulationProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated project."""

    rounds: int = 6
    images_per_round: int = 100
    # The project's first options; empty: the world's seen labels (49).
    initial_labels: tuple[str, ...] = ()
    # Labels added to the options mid-way (one per label kind by default: an object, a colour,
    # a scene), all unseen in the world's split, so no base model has trained on them.
    novel_labels: tuple[str, ...] = ("zebra", "pink", "sand")
    # The round whose annotations are the first to show the novel labels; 0: rounds // 2 + 1.
    novel_round: int = 0
    heldout_fraction: float = 0.2
    val_fraction: float = 0.1
    # World test-stream images for the seen/novel curves (reporting only).
    test_images: int = 1000
    round: RoundConfig = field(default_factory=RoundConfig)
    # Rounds trained with learning rates 100x too high: a deliberately broken candidate, to show
    # that the promotion gate keeps the model in service.
    degrade_rounds: tuple[int, ...] = ()
    # Probability that the annotator misses a true tag.
    miss_rate: float = 0.0
    # Probability that the annotator keeps a wrong tag it was shown (anchoring on the suggestion).
    automation_bias: float = 0.05
    # How the model in service pre-annotates: the product's rule, refit and guard.
    serving: ServingConfig = ServingConfig()
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)

    @property
    def first_novel_round(self) -> int:
        """The round in which the novel labels appear."""
        return self.novel_round or self.rounds // 2 + 1

    def options(self) -> tuple[str, ...]:
        """The initial options."""
        return self.initial_labels or default_vocabulary().seen_names


@dataclass
class SimulationState:
    """What a selector sees: the pool, what is annotated, the options and the model in service."""

    pool: LabeledImages
    annotations: list[AnnotatedImage]
    annotated: set[int]
    options: list[str]
    service: LoadedModel
    round: int
    rng: np.random.Generator


#: ``selector(state, n)`` returns up to ``n`` unannotated pool indices.
Selector = Callable[[SimulationState, int], Sequence[int]]
#: ``observer(state, row)``, called after each round (e.g. to keep the model in service).
RoundObserver = Callable[[SimulationState, "RoundRow"], None]


def next_unlabeled(state: SimulationState, n: int) -> list[int]:
    """The next ``n`` unannotated pool images in pool order (a random sample: world images are i.i.d.)."""
    return [i for i in range(len(state.pool)) if i not in state.annotated][:n]


@dataclass
class RoundRow:
    """One line of the simulation table (row 0: the base model, before any round).

    Attributes:
        round: Round number.
        options: Options in the project's config.
        annotated: Annotations so far.
        train, val, heldout: Split sizes of the round.
        current_map, candidate_map: Held-out mAP of the model in service and of the candidate.
        delta: ``candidate_map - current_map``.
        promoted: Whether the candidate was promoted.
        reason: The decision, or why the round was skipped.
        version: The version in service after the round.
        test_seen, test_novel: Test-stream mAP of the model in service after the round.
        test_novel_ap: Test AP (percent) of each novel label.
        test_ap: Test AP (percent) of every option, initial and novel.
        final_heldout_map: mAP of the model in service on the last round's held-out set.
        newly_seen: Labels that became seen in this round's candidate.
        novel_preannotated: Novel tags the model in service pre-selected this round (zero-shot
            until the novel labels are trained), and how many of them were right.
        edits: Edits on this round's pre-annotations (wrong tags shown plus true tags not shown).
        scratch: What the same tasks would have taken from scratch (their true tags).
        errors: Wrong shown tags the annotator kept this round (label errors introduced).
        current_edits, candidate_edits: ``edits_vs_scratch`` of both models on the held-out
            split under the pre-annotation rule (the promotion gate's second test).
        seconds: Wall time of the round.
    """

    round: int
    options: int
    annotated: int = 0
    train: int = 0
    val: int = 0
    heldout: int = 0
    current_map: float | None = None
    candidate_map: float | None = None
    delta: float | None = None
    promoted: bool = False
    reason: str = ""
    version: str = ""
    test_seen: float = float("nan")
    test_novel: float = float("nan")
    test_novel_ap: dict[str, float] = field(default_factory=dict)
    test_ap: dict[str, float] = field(default_factory=dict)
    final_heldout_map: float | None = None
    newly_seen: tuple[str, ...] = ()
    novel_preannotated: tuple[int, int] = (0, 0)
    edits: int = 0
    scratch: int = 0
    errors: int = 0
    current_edits: float | None = None
    candidate_edits: float | None = None
    seconds: float = 0.0

    @property
    def edits_ratio(self) -> float | None:
        """This round's edits against from scratch."""
        return self.edits / self.scratch if self.scratch else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


@dataclass
class SimulationResult:
    """The rows and what they show."""

    config: SimulationConfig
    rows: list[RoundRow]
    # Share of test images showing each novel label (the AP of random scores).
    test_prevalence: dict[str, float] = field(default_factory=dict)
    # Every annotation's edits against from scratch, in order.
    effort: EffortLog = field(default_factory=EffortLog)

    def effort_summary(self) -> str:
        """Edits against from scratch over the whole run, the last quarter and the worst round."""
        s = self.effort.summary()
        cumulative = [self.effort.cumulative_ratio(r.annotated) for r in self.rows[1:]]
        worst = max((c for c in cumulative if c is not None), default=None)
        return (
            f"pre-annotation: {_fmt(s['edits_per_task'], '.2f')} edits per task against "
            f"{_fmt(s['scratch_per_task'], '.2f')} from scratch ({_fmt(s['cost_ratio'], '.2f')}x; last quarter "
            f"{_fmt(s['last_quarter']['cost_ratio'], '.2f')}x; cumulative, worst after a round "
            f"{_fmt(worst, '.2f')}x), {_fmt(s['shown_per_task'], '.1f')} tags shown per task at precision "
            f"{_fmt(s['precision'], '.2f')}, {s['errors_introduced']} label errors introduced "
            f"(automation bias {self.config.automation_bias:g})"
        )

    def novel_summary(self) -> str:
        """Per novel label: random AP, zero-shot AP when it was added, AP after the last round."""
        first = self.config.first_novel_round
        before = next((r for r in self.rows if r.round == first - 1), None)
        added = next((r for r in self.rows if r.round == first), None)
        lines = []
        for name in self.config.novel_labels:
            zero_shot = before.test_novel_ap.get(name) if before else None
            lines.append(
                f"{name}: random {100 * self.test_prevalence.get(name, float('nan')):.1f}, "
                f"zero-shot when added (round {first}) {_fmt(zero_shot)}, "
                f"after round {self.rows[-1].round} {_fmt(self.rows[-1].test_novel_ap.get(name))}"
            )
        if added is not None:
            shown, right = added.novel_preannotated
            lines.append(f"pre-annotated novel tags in round {first} (zero-shot): {shown}, of which correct: {right}")
        return "\n".join(lines)

    def violations(self) -> list[int]:
        """Rounds that promoted a candidate worse than the model in service beyond the tolerance (none, by design)."""
        tol = self.config.round.tolerance
        return [r.round for r in self.rows if r.promoted and r.delta is not None and r.delta < -tol - 1e-9]

    def table(self) -> str:
        """A fixed-width text table of the rows."""
        head = (
            f"{'round':>5} {'opts':>4} {'annot':>5} {'tr/va/ho':>11} {'cur':>6} {'cand':>6} {'delta':>6} "
            f"{'prom':>4} {'edits':>5} {'scr':>5} {'x':>4} {'ho x':>9} {'test seen':>9} {'test novel':>10} "
            f"{'final ho':>8} {'s':>5}  version / note"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            split = f"{r.train}/{r.val}/{r.heldout}" if r.round else "-"
            note = r.version if r.promoted or not r.round else f"{r.version} (kept: {r.reason})"
            if r.newly_seen:
                note += f"; newly seen: {', '.join(r.newly_seen[:6])}{' ...' if len(r.newly_seen) > 6 else ''}"
            lines.append(
                f"{r.round:>5} {r.options:>4} {r.annotated:>5} {split:>11} {_fmt(r.current_map):>6} "
                f"{_fmt(r.candidate_map):>6} {_fmt(r.delta, '+.1f'):>6} {('yes' if r.promoted else 'no'):>4} "
                f"{r.edits if r.round else '-':>5} {r.scratch if r.round else '-':>5} {_fmt(r.edits_ratio, '.2f'):>4} "
                f"{_fmt(r.current_edits, '.2f') + '/' + _fmt(r.candidate_edits, '.2f'):>9} {_fmt(r.test_seen):>9} "
                f"{_fmt(r.test_novel):>10} {_fmt(r.final_heldout_map):>8} {r.seconds:>5.0f}  {note}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready rows and settings."""
        cfg = self.config
        return {
            "settings": {
                "rounds": cfg.rounds,
                "images_per_round": cfg.images_per_round,
                "novel_labels": list(cfg.novel_labels),
                "novel_round": cfg.first_novel_round,
                "tolerance": cfg.round.tolerance,
                "stages": list(cfg.round.stages),
                "degrade_rounds": list(cfg.degrade_rounds),
                "miss_rate": cfg.miss_rate,
                "automation_bias": cfg.automation_bias,
                "serving": cfg.serving.as_dict(),
                "seed": cfg.seed,
            },
            "effort": self.effort.summary(),
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "violations": self.violations(),
            "test_prevalence": self.test_prevalence,
        }


# --------------------------------------------------------------------------------------------------
def _probabilities(
    loaded: LoadedModel, images: NDArray[np.uint8], options: Sequence[str], batch: int
) -> NDArray[np.float64]:
    """The model in service's calibrated probabilities over the options."""
    tagger = Tagger(loaded, device=loaded.model.device, batch_size=batch)
    probs = tagger.probabilities(encode_images(loaded, images, batch), list(options))
    return np.asarray(probs, dtype=np.float64)


def _test_aps(loaded: LoadedModel, test: LabeledImages, labels: Sequence[str], batch: int) -> dict[str, float]:
    tagger = Tagger(loaded, device=loaded.model.device, batch_size=batch)
    raw = tagger.raw_scores(encode_images(loaded, test.images, batch), list(labels))
    ap = per_label_ap(raw, test.targets(labels))
    return {name: 100.0 * float(a) for name, a in zip(labels, ap, strict=True)}


def _round_data(
    annotations: Sequence[AnnotatedImage], options: Sequence[str], pool: LabeledImages, cfg: SimulationConfig
) -> RoundData:
    images = pool.images[np.array([int(a.key) for a in annotations], dtype=np.int64)]
    return split_annotations(
        annotations,
        LabelSet(tuple(options)),
        lambda rows, targets: ArrayImageDataset(images[rows], targets),
        salt=f"simulation-{cfg.seed}",
        heldout_fraction=cfg.heldout_fraction,
        val_fraction=cfg.val_fraction,
        min_val_images=cfg.round.min_val_images,
    )


def _degraded(cfg: RoundConfig) -> RoundConfig:
    s1, s2 = cfg.stage1, cfg.stage2
    return dataclasses.replace(
        cfg, stage1=dataclasses.replace(s1, lr=s1.lr * 100), stage2=dataclasses.replace(s2, lr=s2.lr * 100)
    )


def _check(cfg: SimulationConfig, names: Sequence[str]) -> None:
    known = set(names)
    unknown = [n for n in (*cfg.options(), *cfg.novel_labels) if n not in known]
    overlap = set(cfg.options()) & set(cfg.novel_labels)
    if unknown or overlap or cfg.rounds < 1 or cfg.images_per_round < 1:
        raise ConfigError(
            "invalid simulation settings",
            why=f"unknown labels {unknown[:5]}; novel labels already among the initial ones {sorted(overlap)[:5]}; "
            f"rounds {cfg.rounds}, images per round {cfg.images_per_round}",
            fix="use world labels (benchworld.world.default_vocabulary().names), novel ones not in the initial set, "
            "and at least one round of one image",
        )


def _evaluate_service(
    row: RoundRow, service: LoadedModel, test: LabeledImages, cfg: SimulationConfig, batch: int
) -> None:
    seen, novel = list(cfg.options()), list(cfg.novel_labels)
    aps = _test_aps(service, test, [*seen, *novel], batch)
    row.test_seen = float(np.mean([aps[n] for n in seen]))
    row.test_novel = float(np.mean([aps[n] for n in novel])) if novel else float("nan")
    row.test_novel_ap = {n: aps[n] for n in novel}
    row.test_ap = {n: aps[n] for n in [*seen, *novel]}
    row.version = service.model.version


def simulate_rounds(
    base: LoadedModel,
    cfg: SimulationConfig,
    *,
    teacher: Backbone | None = None,
    selector: Selector | None = None,
    progress: SimulationProgress | None = None,
    pool: LabeledImages | None = None,
    test: LabeledImages | None = None,
    annotator: SimulatedAnnotator | None = None,
    observer: RoundObserver | None = None,
) -> SimulationResult:
    """Run the simulated project (see the module docstring).

    Args:
        base: The model in service at the start (and, unless ``teacher`` is given, the source of
            the frozen backbone that stage 1 distils onto).
        cfg: The project.
        teacher: The frozen base backbone (default: a frozen copy of ``base``'s).
        selector: Which pool images get annotated each round (default :func:`next_unlabeled`).
        progress: ``progress(what, done, total)``.
        pool: The images the selector chooses from (default: the first ``rounds ·
            images_per_round`` of the world's train stream); active learning passes a larger one.
        test: The evaluation images of the curves (default: ``cfg.test_images`` of the test stream).
        annotator: Who annotates the pool (default: a :class:`SimulatedAnnotator` of ``pool``
            with ``cfg.miss_rate``).
        observer: Called after each round with the state and the round's row.

    Returns:
        One row per round after row 0 (the base model).
    """
    world_names = default_vocabulary().names
    _check(cfg, world_names)
    report = progress or (lambda what, done, total: None)
    if pool is None:
        pool = render_labeled(
            Stream.TRAIN, cfg.rounds * cfg.images_per_round, cfg.world, progress=lambda d, t: report("pool", d, t)
        )
    if test is None:
        test = render_labeled(Stream.TEST, cfg.test_images, cfg.world, progress=lambda d, t: report("test set", d, t))
    batch = cfg.round.eval_batch_size
    if teacher is None:
        import copy

        teacher = copy.deepcopy(base.model.backbone).eval().requires_grad_(False)
    annotator = annotator or annotator_for(
        pool, cfg.world, miss_rate=cfg.miss_rate, automation_bias=cfg.automation_bias, seed=cfg.seed
    )
    serving, effort = ProjectServing(cfg.serving), EffortLog(cfg.serving.costs)
    state = SimulationState(pool, [], set(), list(cfg.options()), base, 0, np.random.default_rng(cfg.seed))
    row0 = RoundRow(round=0, options=len(state.options), reason="base model", promoted=False)
    _evaluate_service(row0, base, test, cfg, batch)
    rows, services, data = [row0], [base], None
    for r in range(1, cfg.rounds + 1):
        started = time.perf_counter()
        state.round = r
        if r == cfg.first_novel_round:
            state.options += [n for n in cfg.novel_labels if n not in state.options]
        chosen = list((selector or next_unlabeled)(state, cfg.images_per_round))
        probs = _probabilities(state.service, pool.images[chosen], state.options, batch)
        novel_shown = novel_right = 0
        first = len(effort.tasks)
        for index, row in zip(chosen, probs, strict=True):
            served = serving.serve(state.service.model.version, state.options, row)
            tags = list(served.tags)
            annotation = effort.annotate(annotator, index, state.options, tags)
            serving.record(served, annotation.positives)
            state.annotations.append(annotation)
            state.annotated.add(index)
            novel_tags = [t for t in tags if t in cfg.novel_labels]
            novel_shown += len(novel_tags)
            novel_right += sum(t in annotation.positives for t in novel_tags)
        done = effort.totals(first)
        data = _round_data(state.annotations, state.options, pool, cfg)
        row = RoundRow(
            round=r,
            options=len(state.options),
            annotated=len(state.annotations),
            train=len(data.train),
            val=0 if data.val is None else len(data.val),
            heldout=len(data.heldout),
            novel_preannotated=(novel_shown, novel_right),
            edits=done.edits,
            scratch=done.scratch,
            errors=sum(effort.errors[first:]),
        )
        round_cfg = _degraded(cfg.round) if r in cfg.degrade_rounds else cfg.round

        def round_progress(phase: str, done: int, total: int, _r: int = r) -> None:
            report(f"round {_r}: {phase}", done, total)

        try:
            outcome = run_round(
                state.service,
                data,
                round_cfg,
                teacher=teacher,
                progress=round_progress,
            )
        except InsufficientDataError as exc:
            row.reason = exc.what
        else:
            _record(row, outcome, r)
            if outcome.decision.promote:
                outcome.candidate.loaded.model.version = f"sim-r{r}"
                state.service = outcome.candidate.loaded
        _evaluate_service(row, state.service, test, cfg, batch)
        row.seconds = time.perf_counter() - started
        rows.append(row)
        services.append(state.service)
        logger.info("simulation round %d: %s", r, row.reason)
        if observer is not None:
            observer(state, row)
    if data is not None:
        _final_heldout(rows, services, data, cfg.round)
    prevalence = test.targets(list(cfg.novel_labels)).mean(axis=0) * 0.5 + 0.5 if cfg.novel_labels else []
    return SimulationResult(cfg, rows, dict(zip(cfg.novel_labels, map(float, prevalence), strict=True)), effort)


def _record(row: RoundRow, outcome: RoundOutcome, r: int) -> None:
    row.current_map = outcome.current.metrics.get("mAP")
    row.candidate_map = outcome.evaluated.metrics.get("mAP")
    row.delta = outcome.decision.delta if np.isfinite(outcome.decision.delta) else None
    row.current_edits = outcome.current.metrics.get("edits_vs_scratch")
    row.candidate_edits = outcome.evaluated.metrics.get("edits_vs_scratch")
    row.promoted = outcome.decision.promote
    row.reason = outcome.decision.reason
    row.newly_seen = outcome.candidate.newly_seen
    if r and not outcome.decision.promote:
        logger.info("round %d kept the model in service: %s", r, outcome.decision.reason)


def _final_heldout(rows: list[RoundRow], services: list[LoadedModel], data: RoundData, cfg: RoundConfig) -> None:
    """mAP of every round's model in service on the last round's held-out set (fixed, never trained on)."""
    targets = data.heldout.targets
    evaluable = ((targets > 0).any(axis=0)) & ((targets < 0).any(axis=0))
    if not evaluable.any():
        return
    cache: dict[int, float] = {}
    images = np.stack([data.heldout.data[i][0].permute(1, 2, 0).numpy() for i in range(len(data.heldout))])
    for row, service in zip(rows, services, strict=True):
        key = id(service)
        if key not in cache:
            tagger = Tagger(service, device=service.model.device, batch_size=cfg.eval_batch_size)
            raw = tagger.raw_scores(encode_images(service, images, cfg.eval_batch_size), list(data.labels))
            cache[key] = 100.0 * float(per_label_ap(raw, targets)[evaluable].mean())
        row.final_heldout_map = cache[key]


def plot_simulation(result: SimulationResult, path: Path) -> Path:
    """PNG of the mAP of the model in service per round: test seen, test novel, final held-out."""
    rows = result.rows
    curves: dict[str, list[tuple[float, float]]] = {
        "test mAP, seen (initial) labels": [(r.round, r.test_seen) for r in rows],
    }
    if result.config.novel_labels:
        curves[f"test mAP, novel labels (added in round {result.config.first_novel_round})"] = [
            (r.round, r.test_novel) for r in rows
        ]
    final = [(r.round, r.final_heldout_map) for r in rows if r.final_heldout_map is not None]
    if final:
        curves["held-out mAP (last round's held-out set)"] = [(x, float(y)) for x, y in final if y is not None]
    rejected = [r.round for r in rows if r.round and not r.promoted]
    title = "Simulated fine-tuning rounds" + (f" (kept the model in service in rounds {rejected})" if rejected else "")
    return plot_learning_curves(curves, path, "round (0 = base model)", "mAP (%)", title)


def plot_simulation_effort(result: SimulationResult, path: Path) -> Path:
    """PNG of each round's edits per task on its pre-annotations, against labeling the same tasks from scratch."""
    pairs = [(r, r.annotated - before.annotated) for before, r in zip(result.rows, result.rows[1:], strict=False)]
    served = [(r.round, r.edits / n, r.scratch / n) for r, n in pairs if n > 0]
    curves = {
        "edits per task from the pre-annotations": [(x, e) for x, e, _ in served],
        "from scratch (true tags per task)": [(x, s) for x, _, s in served],
    }
    title = "Annotation effort per round: pre-annotation against labeling from scratch"
    baseline = "from scratch (true tags per task)"
    return plot_learning_curves(
        curves,
        path,
        "round (its tasks are served by the model in service before it)",
        "edits per task",
        title,
        dashed=[baseline],
    )
