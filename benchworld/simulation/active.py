"""Active learning on the benchmark world: learning curves per strategy, and a label-quality check.

**The learning curve** of a strategy is the mAP of the model in service on a fixed evaluation set
against the labels spent (annotated images). Each run is the round loop of
:func:`~benchworld.simulation.loop.simulate_rounds`, unchanged, with one hook: its selector
chooses the next images with a registered strategy (:mod:`assistant.selection`) instead of taking
the next ones. The learner is therefore the production round (stage 1 and/or stage 2,
calibration, the promotion gate); only its settings are scaled to the budget.

Honest evaluation:

- **The evaluation set** is ``eval_images`` images of the world's test stream, labeled on every
  option (initial and novel), never in any pool, never trained on, never used by a decision. Tune
  settings with ``eval_stream=Stream.VAL`` (the world's validation stream) and report on TEST.
- **The pool** of each seed is a fresh slice of the train stream (``pool_images`` images from
  ``seed · pool_images``), the same for every strategy of that seed, so strategies are compared on
  paired data; the split salt, the annotator and every strategy draw from the seed.
- **Noise** is the seed spread: at each budget point, the standard deviation over seeds of random
  sampling's mAP. A strategy is "worse than random by more than noise" at a point when its mean
  is below random's mean by more than that spread.

The mAP of a round is the mean test AP over the final options (initial and novel), evaluated for
the model in service after the round; row 0 is the base model before any label.

**The label-quality check** (:func:`simulate_label_quality`) annotates a pool with a corrupting
annotator (a fraction of the tasks get one wrong tag: half a true tag left out, half a false one
added), runs the rounds on that data, then rates every annotated task with
:func:`assistant.label_quality.review_labels` and counts how many corrupted tasks the flagged top
fraction holds. Each task is scored by the model that was in service when it was annotated (the
prediction its annotator saw, which never trained on it), as the agent rates annotations in
production: the model after the last round trained on ~80% of the tasks and has partly learnt
their mistakes. "Corrupt 5% of the training tags" is read as one wrong tag in 5% of the tasks:
flipping 5% of all tag entries would corrupt 93% of the tasks at 52 options (1 - 0.95^52), and no
top 5% could then hold half of them.
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
import torch
from numpy.typing import NDArray

from assistant.checkpoint import LoadedModel
from assistant.config import Stage1Config, Stage2Config
from assistant.corrections import AnnotatedImage, correction_targets
from assistant.errors import ConfigError
from assistant.inference import Tagger
from assistant.label_quality import review_labels
from assistant.labels import LabelSet
from assistant.plots import plot_learning_curves
from assistant.rounds import RoundConfig
from assistant.selection import SelectionPool, create_strategy, list_strategies
from benchworld.simulation.annotator import LabeledImages, SimulatedAnnotator, TeamAnnotator, render_labeled
from benchworld.simulation.features import CachedFeatures, encode_images
from benchworld.simulation.loop import (
    RoundRow,
    Selector,
    SimulationConfig,
    SimulationProgress,
    SimulationState,
    simulate_rounds,
)
from benchworld.simulation.oracles import ORACLES, is_oracle, oracle_selector
from benchworld.world.config import Stream

__all__ = [
    "AL_ROUND",
    "ActiveLearningConfig",
    "ActiveLearningResult",
    "CorruptingAnnotator",
    "LabelQualityResult",
    "StrategyRun",
    "plot_active_learning",
    "rarest_third",
    "simulate_active_learning",
    "simulate_label_quality",
    "strategy_selector",
]

logger = logging.getLogger(__name__)


# The production round, scaled to a simulation that must fit 2 cores: stage 1 for 4 epochs
# (validation kept epochs 2-3 of 8 in trial rounds of 100-400 images, so 4 loses little and halves
# the cost), stage 2 as in production. The promotion gate is open (a tolerance of 100 mAP points
# never refuses): it judges a candidate on the held-out share of the annotations so far, 20-120
# images here, whose noise is many times its 0.5-point tolerance, and in a pilot on the world's
# validation stream it refused 2 of the first 3 rounds of uncertainty and novelty sampling and
# none of random sampling's. With it open, a curve shows what each strategy's labels teach. Its
# second test, edits against from scratch on the held-out split, is opened alike.
AL_ROUND = RoundConfig(
    stage1=Stage1Config(epochs=4, batch_size=32, warmup_epochs=1.0, distill_weight=0.3),
    stage2=Stage2Config(epochs=4, batch_size=32),
    tolerance=100.0,
    edits_tolerance=100.0,
)


@dataclass(frozen=True)
class ActiveLearningConfig:
    """The active-learning simulation (module docstring).

    Attributes:
        strategies: Registered strategies to compare (the summary compares each with ``random``),
            and oracles (:mod:`benchworld.simulation.oracles`: upper bounds that see the truth).
        seeds: One run per seed and strategy.
        budget: Labels (annotated images) spent by the end of the last round.
        rounds: Rounds; each spends ``budget / rounds`` labels.
        pool_images: Unlabeled images a strategy chooses from (per seed).
        eval_images: Images of the evaluation set.
        eval_stream: ``Stream.TEST`` to report, ``Stream.VAL`` to tune settings.
        simulation: Round settings, options and novel labels (its ``rounds``,
            ``images_per_round``, ``seed`` and ``test_images`` are set from the fields above).
    """

    strategies: tuple[str, ...] = ("random", "uncertainty", "entropy", "novelty", "diversity", "hybrid")
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: int = 600
    rounds: int = 6
    pool_images: int = 3000
    eval_images: int = 1000
    eval_stream: Stream = Stream.TEST
    # An annotator without automation bias: what it labels does not depend on what it was shown,
    # so the strategies are compared on the labels alone.
    simulation: SimulationConfig = field(default_factory=lambda: SimulationConfig(round=AL_ROUND, automation_bias=0.0))

    @property
    def per_round(self) -> int:
        """Labels spent per round."""
        return self.budget // self.rounds

    def check(self) -> None:
        """Raise :class:`~assistant.errors.ConfigError` on unusable settings."""
        unknown = [s for s in self.strategies if s not in list_strategies() and not is_oracle(s)]
        if unknown or self.rounds < 1 or self.per_round < 1 or self.pool_images < self.budget or not self.seeds:
            raise ConfigError(
                "invalid active-learning simulation settings",
                why=f"unknown strategies {unknown}; budget {self.budget} over {self.rounds} rounds; "
                f"pool {self.pool_images}; seeds {self.seeds}",
                fix=f"use registered strategies ({', '.join(list_strategies())}) or oracles ({', '.join(ORACLES)}), "
                "a budget of at least one image per round, a pool at least as large as the budget, "
                "and at least one seed",
            )

    def fingerprint(self) -> str:
        """A digest of everything that shapes a run except the strategy and the seed.

        Runs with the same fingerprint are comparable (and resumable, see
        :func:`simulate_active_learning`).
        """
        import hashlib
        import json

        cfg = self.for_seed(0)
        described = {
            "budget": self.budget,
            "rounds": self.rounds,
            "pool": self.pool_images,
            "eval": [self.eval_images, int(self.eval_stream)],
            "simulation": repr(dataclasses.replace(cfg, seed=0)),
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def for_seed(self, seed: int) -> SimulationConfig:
        """The round-loop settings of one run."""
        return dataclasses.replace(
            self.simulation,
            rounds=self.rounds,
            images_per_round=self.per_round,
            seed=seed,
            test_images=self.eval_images,
        )


@dataclass
class StrategyRun:
    """One strategy, one seed: the curve and the rows it came from.

    Attributes:
        strategy: The strategy.
        seed: The seed.
        labels: Labels spent at each point (0 for the base model).
        map: mAP (percent) over the final options at each point.
        map_seen: Over the initial options.
        map_novel: Over the novel options (NaN without novel labels).
        map_rare: Over the rarest third of the final options (by their prevalence in the seed's
            pool: the same labels for every strategy of a seed).
        rare_labels: Those labels.
        promoted: Per round after row 0, whether the candidate was promoted.
        seconds: Wall time of the run.
    """

    strategy: str
    seed: int
    labels: list[int]
    map: list[float]
    map_seen: list[float]
    map_novel: list[float]
    promoted: list[bool]
    seconds: float
    map_rare: list[float] = field(default_factory=list)
    rare_labels: list[str] = field(default_factory=list)


@dataclass
class ActiveLearningResult:
    """Every run, and the comparison with random sampling."""

    config: ActiveLearningConfig
    runs: list[StrategyRun]

    def curves(
        self, metric: str = "map"
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]:
        """Per strategy: labels, mean and standard deviation over seeds of ``metric`` at each point."""
        out = {}
        for name in self.strategies():
            runs = [r for r in self.runs if r.strategy == name]
            values = np.array([getattr(r, metric) for r in runs], dtype=np.float64)
            std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(values.shape[1])
            out[name] = (np.asarray(runs[0].labels, dtype=np.float64), values.mean(axis=0), std)
        return out

    def strategies(self) -> list[str]:
        """The strategies run, in configuration order."""
        return list(dict.fromkeys(r.strategy for r in self.runs))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per strategy, against random sampling (see the module docstring for the rules).

        Keys: ``final`` (mean mAP at the full budget), ``final_rare`` (over the rarest third of the
        labels), ``labels_to_random_final_rare`` and ``label_ratio_rare`` (the same on the rarest
        third: labels at which the strategy's rare-third curve reaches random's final rare-third
        mAP), ``labels_to_random_final`` (labels at which
        the mean curve first reaches random's final mAP, linearly interpolated; None if never),
        ``label_ratio`` (that over the budget), ``worst_gap`` (the most negative mean difference
        to random over the points), ``noise_at_worst`` (random's seed spread there),
        ``worse_than_noise`` (the points where the gap exceeds the noise).
        """
        curves = self.curves()
        if "random" not in curves:
            return {}
        x, random_mean, random_std = curves["random"]
        target = float(random_mean[-1])
        rare = self.curves("map_rare") if all(r.map_rare for r in self.runs) else {}
        out: dict[str, dict[str, Any]] = {}
        for name, (_, mean, _) in curves.items():
            reached = _first_reach(x, mean, target)
            gap = mean - random_mean
            worst = int(np.argmin(gap))
            if rare:
                rare_mean, rare_target = rare[name][1], float(rare["random"][1][-1])
                rare_reached = _first_reach(x, rare_mean, rare_target)
            out[name] = {
                "final_rare": float(rare[name][1][-1]) if rare else None,
                "labels_to_random_final_rare": rare_reached if rare else None,
                "label_ratio_rare": None if not rare or rare_reached is None else rare_reached / float(x[-1]),
                "final": float(mean[-1]),
                "labels_to_random_final": reached,
                "label_ratio": None if reached is None else reached / float(x[-1]),
                "worst_gap": float(gap[worst]),
                "noise_at_worst": float(random_std[worst]),
                "worse_than_noise": [int(x[i]) for i in range(x.size) if gap[i] < -random_std[i] - 1e-9],
            }
        return out

    def table(self) -> str:
        """Mean ± seed std of the mAP at every budget point, one line per strategy, and the summary."""
        curves = self.curves()
        x = next(iter(curves.values()))[0]
        head = f"{'strategy':<12}" + "".join(f"{int(v):>13}" for v in x)
        lines = ["mAP (%) on the evaluation set by labels spent, mean ± std over seeds", head, "-" * len(head)]
        for name, (_, mean, std) in curves.items():
            lines.append(f"{name:<12}" + "".join(f"{m:>7.2f} ±{s:>4.2f}" for m, s in zip(mean, std, strict=True)))
        if all(r.map_rare for r in self.runs):
            lines += ["", "mAP (%) over the rarest third of the labels (by pool prevalence)", head, "-" * len(head)]
            for name, (_, mean, std) in self.curves("map_rare").items():
                cells = "".join(f"{m:>7.2f} ±{s:>4.2f}" for m, s in zip(mean, std, strict=True))
                lines.append(f"{name:<12}" + cells)
        lines.append("")
        for name, s in self.summary().items():
            ratio = "never" if s["label_ratio"] is None else f"{100 * s['label_ratio']:.0f}% of the budget"
            worse = s["worse_than_noise"] or "no point"
            rare = ""
            if s["final_rare"] is not None:
                rare_ratio = "never" if s["label_ratio_rare"] is None else f"{100 * s['label_ratio_rare']:.0f}%"
                rare = f"; rarest third: final {s['final_rare']:.2f}, reaches random's at {rare_ratio}"
            lines.append(
                f"{name:<12} final {s['final']:.2f}; reaches random's final mAP at {ratio}; worst gap to random "
                f"{s['worst_gap']:+.2f} (noise {s['noise_at_worst']:.2f}); worse than noise at {worse}{rare}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Settings, every run and the summary."""
        cfg = self.config
        sim = cfg.simulation
        return {
            "settings": {
                "fingerprint": cfg.fingerprint(),
                "strategies": list(cfg.strategies),
                "seeds": list(cfg.seeds),
                "budget": cfg.budget,
                "rounds": cfg.rounds,
                "per_round": cfg.per_round,
                "pool_images": cfg.pool_images,
                "eval_images": cfg.eval_images,
                "eval_stream": cfg.eval_stream.name.lower(),
                "novel_labels": list(sim.novel_labels),
                "novel_round": dataclasses.replace(sim, rounds=cfg.rounds).first_novel_round,
                "stages": list(sim.round.stages),
                "stage1_epochs": sim.round.stage1.epochs,
                "stage2_epochs": sim.round.stage2.epochs,
                "tolerance": sim.round.tolerance,
            },
            "runs": [dataclasses.asdict(r) for r in self.runs],
            "summary": self.summary(),
        }


def rarest_third(pool: LabeledImages, labels: Sequence[str]) -> list[str]:
    """The third of ``labels`` (at least one) least often present in ``pool``, rarest first.

    The long tail is where class imbalance hurts selection (arXiv 2111.12880); the pool, not the
    evaluation set, decides which labels are rare, so the grouping never looks at test data.
    """
    prevalence = pool.truth[:, [pool.names.index(n) for n in labels]].mean(axis=0)
    order = np.argsort(prevalence, kind="stable")
    return [labels[int(i)] for i in order[: max(1, len(labels) // 3)]]


def _first_reach(x: NDArray[np.float64], y: NDArray[np.float64], target: float) -> float | None:
    """The first x at which the piecewise-linear curve (x, y) reaches ``target``."""
    for i in range(x.size):
        if y[i] >= target - 1e-9:
            if i == 0:
                return float(x[0])
            x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
            return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)
    return None


# --------------------------------------------------------------------------------------------------
# The selector hook
# --------------------------------------------------------------------------------------------------
def strategy_selector(name: str, seed: int, pool: LabeledImages, *, batch: int = 64) -> Selector:
    """A selector for :func:`simulate_rounds` that chooses with a registered strategy.

    Each round it scores the unannotated pool with the model in service (calibrated scores over
    the current options), builds a :class:`~assistant.selection.SelectionPool` with the global
    image embeddings (the annotated images as the labeled set), and lets the strategy choose.
    The novel labels are the options the model in service has not been trained on.

    Args:
        name: The strategy.
        seed: The run's seed (each round's strategy seed derives from it).
        pool: The simulation's pool.
        batch: Images per forward pass.
    """
    features = CachedFeatures(pool.images, batch)

    def select(state: SimulationState, n: int) -> list[int]:
        feats = features.of(state.service)
        rows = np.array([i for i in range(len(state.pool)) if i not in state.annotated], dtype=np.int64)
        labeled = np.array(sorted(state.annotated), dtype=np.int64)
        options = list(state.options)
        tagger = Tagger(state.service, device=state.service.model.device, batch_size=256)
        probs = tagger.probabilities(feats.index(torch.from_numpy(rows)), options)
        seen = state.service.model.is_seen(options)
        glob = feats.global_emb.numpy()
        selection_pool = SelectionPool.from_arrays(
            probs,
            tagger.calibrator.thresholds(options),
            options,
            novel_labels=[o for o, s in zip(options, seen, strict=True) if not s],
            embeddings=glob[rows],
            labeled_embeddings=glob[labeled] if labeled.size else None,
            calibrated=not tagger.calibrator.is_prior,
        )
        chosen = create_strategy(name, seed=seed * 1000 + state.round).select(selection_pool, n)
        picked: list[int] = rows[chosen.indices].tolist()
        return picked

    return select


def _overall(row: RoundRow, n_seen: int) -> tuple[float, float, float]:
    novel = list(row.test_novel_ap.values())
    total = (row.test_seen * n_seen + sum(novel)) / (n_seen + len(novel))
    return float(total), float(row.test_seen), float(np.mean(novel)) if novel else float("nan")


# --------------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------------
def _prefixed(report: SimulationProgress, prefix: str) -> Callable[..., None]:
    def progress(*args: Any) -> None:
        # (done, total) from the renderer, (what, done, total) from the round loop.
        what = f"{prefix}: {args[0]}" if len(args) == 3 else prefix
        report(what, int(args[-2]), int(args[-1]))

    return progress


def simulate_active_learning(
    base: LoadedModel,
    cfg: ActiveLearningConfig,
    *,
    completed: Sequence[StrategyRun] = (),
    progress: SimulationProgress | None = None,
    on_run: Callable[[StrategyRun], None] | None = None,
) -> ActiveLearningResult:
    """Run every strategy with every seed (module docstring).

    Args:
        base: The model in service at the start of every run (never modified).
        cfg: The simulation.
        completed: Runs already done with the same settings (e.g. read back from disk): they
            are kept and not run again, so a long simulation can resume or be split across
            processes.
        progress: ``progress(what, done, total)``; ``what`` names the run and its phase.
        on_run: Called after each new run (e.g. to save it at once).

    Returns:
        Every run, in (seed, strategy) order.
    """
    cfg.check()
    report = progress or (lambda what, done, total: None)
    done = {(r.strategy, r.seed): r for r in completed}
    todo = [(seed, name) for seed in cfg.seeds for name in cfg.strategies if (name, seed) not in done]
    world = cfg.simulation.world
    evaluation = None
    if todo:
        evaluation = render_labeled(
            cfg.eval_stream, cfg.eval_images, world, progress=lambda d, t: report("evaluation set", d, t)
        )
    n_seen = len(cfg.simulation.options())
    pools: dict[int, LabeledImages] = {}
    for count, (seed, name) in enumerate(todo, start=1):
        if seed not in pools:
            pools.clear()  # one seed's pool at a time
            pools[seed] = render_labeled(
                Stream.TRAIN,
                cfg.pool_images,
                world,
                first=seed * cfg.pool_images,
                progress=_prefixed(report, f"pool of seed {seed}"),
            )
        pool = pools[seed]
        sim = cfg.for_seed(seed)
        batch = sim.round.eval_batch_size
        started = time.perf_counter()
        label = f"{name}, seed {seed}"

        def run_progress(what: str, d: int, t: int, _label: str = label) -> None:
            report(f"{_label}: {what}", d, t)

        result = simulate_rounds(
            base,
            sim,
            selector=oracle_selector(name, pool, batch=batch)
            if is_oracle(name)
            else strategy_selector(name, seed, pool, batch=batch),
            progress=run_progress,
            pool=pool,
            test=evaluation,
        )
        points = [_overall(r, n_seen) for r in result.rows]
        rare = rarest_third(pool, [*cfg.simulation.options(), *cfg.simulation.novel_labels])
        run = StrategyRun(
            strategy=name,
            seed=seed,
            labels=[r.annotated for r in result.rows],
            map=[p[0] for p in points],
            map_seen=[p[1] for p in points],
            map_novel=[p[2] for p in points],
            promoted=[r.promoted for r in result.rows[1:]],
            seconds=time.perf_counter() - started,
            map_rare=[float(np.mean([r.test_ap[n] for n in rare])) for r in result.rows],
            rare_labels=rare,
        )
        done[(name, seed)] = run
        logger.info("%s: mAP %s in %.0f s", label, [round(v, 2) for v in run.map], run.seconds)
        report("runs", count, len(todo))
        if on_run is not None:
            on_run(run)
    ordered = [done[(name, seed)] for seed in cfg.seeds for name in cfg.strategies if (name, seed) in done]
    return ActiveLearningResult(cfg, ordered)


def plot_active_learning(result: ActiveLearningResult, path: Path) -> Path:
    """PNG of every strategy's mean curve with its seed band (mean ± std)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    bands: dict[str, list[tuple[float, float]]] = {}
    for name, (x, mean, std) in result.curves().items():
        curves[name] = list(zip(x.tolist(), mean.tolist(), strict=True))
        bands[name] = list(zip((mean - std).tolist(), (mean + std).tolist(), strict=True))
    cfg = result.config
    title = (
        # Two lines: one is wider than the figure.
        f"Active learning on the benchmark world\n({len(cfg.seeds)} seeds, pool {cfg.pool_images}, "
        f"{cfg.eval_images} {cfg.eval_stream.name.lower()} images)"
    )
    return plot_learning_curves(
        curves, path, "labels spent (annotated images)", "mAP (%), all options", title, bands=bands
    )


# --------------------------------------------------------------------------------------------------
# Label quality
# --------------------------------------------------------------------------------------------------
class CorruptingAnnotator(SimulatedAnnotator):
    """A :class:`SimulatedAnnotator` that gets one tag wrong on a random fraction of its tasks.

    A corrupted task either leaves one true tag out (``missing``) or ticks one false option
    (``wrong``), with equal odds; which tasks and tags is decided by the seed.

    Args:
        pool: The images it annotates.
        fraction: Share of tasks corrupted.
        seed: Seed of the corruption.
    """

    def __init__(self, pool: LabeledImages, *, fraction: float = 0.05, seed: int = 0) -> None:
        super().__init__(pool, seed=seed)
        self.fraction = fraction
        self._corrupt_rng = np.random.default_rng([seed, 7])
        #: Task key -> ("missing" | "wrong", tag) for every corrupted task.
        self.corrupted: dict[str, tuple[str, str]] = {}

    def annotate(self, index: int, options: Sequence[str], predicted: Sequence[str]) -> AnnotatedImage:
        """See :meth:`SimulatedAnnotator.annotate`; a fraction of the answers get one wrong tag."""
        honest = super().annotate(index, options, predicted)
        if self._corrupt_rng.random() >= self.fraction:
            return honest
        positives = set(honest.positives)
        absent = sorted(set(options) - positives)
        kind = "missing" if positives and (not absent or self._corrupt_rng.random() < 0.5) else "wrong"
        if kind == "missing":
            tag = str(self._corrupt_rng.choice(sorted(positives)))
            positives.discard(tag)
        else:
            tag = str(self._corrupt_rng.choice(absent))
            positives.add(tag)
        self.corrupted[honest.key] = (kind, tag)
        removed = {n for n in predicted if n not in positives}
        return dataclasses.replace(honest, positives=frozenset(positives), hard_negatives=frozenset(removed))


@dataclass
class LabelQualityResult:
    """How many corrupted tasks the flagged top fraction holds.

    Attributes:
        seed: The run's seed.
        tasks: Annotated tasks reviewed.
        corrupted: Corrupted tasks among them.
        flagged: Tasks flagged (the top fraction by lowest label quality).
        found: Corrupted tasks among the flagged ones.
        found_by_kind: ``{"missing": (found, corrupted), "wrong": (found, corrupted)}``.
        recall: ``found / corrupted``.
        random_recall: The expected recall of flagging the same number of tasks at random.
        scorer: Which models scored the tasks (``annotated: base, sim-r1, ...``: each task by the
            model in service when it was annotated; ``final: sim-r6``: all by the last one).
    """

    seed: int
    tasks: int
    corrupted: int
    flagged: int
    found: int
    found_by_kind: dict[str, tuple[int, int]]
    recall: float
    random_recall: float
    scorer: str


#: Which model scores an annotated task in the label-quality check.
LABEL_QUALITY_SCORERS = ("annotated", "final")


@dataclass
class _Rounds:
    """Per round: the model in service while its tasks were annotated, and the annotations so far."""

    services: list[LoadedModel]
    ends: list[int] = field(default_factory=list)
    state: SimulationState | None = None

    def __call__(self, state: SimulationState, row: RoundRow) -> None:
        del row
        self.ends.append(len(state.annotations))
        self.services.append(state.service)  # in service for the next round's annotations
        self.state = state

    def scorers(self, scorer: str) -> list[tuple[LoadedModel, int, int]]:
        """``(model, first, stop)`` per round: which model scores which annotations."""
        assert self.state is not None
        if scorer == "final":
            return [(self.state.service, 0, len(self.state.annotations))]
        starts = [0, *self.ends[:-1]]
        return [(self.services[r], a, b) for r, (a, b) in enumerate(zip(starts, self.ends, strict=True)) if b > a]


def simulate_label_quality(
    base: LoadedModel,
    cfg: ActiveLearningConfig,
    *,
    fraction: float = 0.05,
    flag_fraction: float = 0.05,
    scorer: str = "annotated",
    progress: SimulationProgress | None = None,
) -> list[LabelQualityResult]:
    """Corrupt ``fraction`` of the annotated tasks, train rounds on them, and review them.

    Per seed: ``cfg.budget`` pool images are annotated over ``cfg.rounds`` rounds (random
    selection) by a :class:`CorruptingAnnotator`; the rounds train on the corrupted data as they
    would in production. Then every annotated task is rated with
    :func:`~assistant.label_quality.review_labels` and the ``flag_fraction`` with the lowest
    label quality are flagged.

    Args:
        base: The model in service before the first round.
        cfg: The rounds (the selection is always random).
        fraction: Share of tasks the annotator corrupts (world v1; in v2 the world's annotation
            team corrupts what its members get wrong, ``benchworld.world.team``).
        flag_fraction: Share of tasks flagged.
        scorer: ``annotated`` (default, as in production): each task is scored by the model in
            service when it was annotated, i.e. the prediction its annotator saw, from a model
            that never trained on it (out of sample, as cleanlab requires). ``final``: every task
            by the model in service after the last round, which trained on ~80% of them and
            partly fitted their mistakes (kept for comparison).
        progress: ``progress(what, done, total)``.

    Returns:
        One result per seed.
    """
    cfg.check()
    if scorer not in LABEL_QUALITY_SCORERS:
        raise ConfigError(f"unknown label-quality scorer {scorer!r}", fix=f"use one of {LABEL_QUALITY_SCORERS}")
    report = progress or (lambda what, done, total: None)
    out: list[LabelQualityResult] = []
    for seed in cfg.seeds:
        report("runs", len(out), len(cfg.seeds))
        pool = render_labeled(Stream.TRAIN, cfg.budget, cfg.simulation.world, first=seed * cfg.pool_images)
        evaluation = render_labeled(cfg.eval_stream, cfg.eval_images, cfg.simulation.world)
        # World v2: the team's own mistakes; v1: one perfect annotator and uniform corruption.
        annotator: CorruptingAnnotator | TeamAnnotator
        if cfg.simulation.world.annotators:
            annotator = TeamAnnotator(pool, cfg.simulation.world.annotators, seed=seed)
        else:
            annotator = CorruptingAnnotator(pool, fraction=fraction, seed=seed)
        rounds = _Rounds([base])
        simulate_rounds(
            base,
            cfg.for_seed(seed),
            progress=_prefixed(report, f"label quality, seed {seed}"),
            pool=pool,
            test=evaluation,
            annotator=annotator,
            observer=rounds,
        )
        assert rounds.state is not None
        batch = cfg.simulation.round.eval_batch_size
        scorers = rounds.scorers(scorer)
        probs, thresholds = _annotation_scores(rounds.state, scorers, batch)
        versions = ", ".join(dict.fromkeys(m.model.version for m, _, _ in scorers))
        out.append(_review(rounds.state, annotator, seed, flag_fraction, probs, thresholds, f"{scorer}: {versions}"))
        logger.info("label quality, seed %d: %s", seed, out[-1])
    report("runs", len(out), len(cfg.seeds))
    return out


def _annotation_scores(
    state: SimulationState, scorers: Sequence[tuple[LoadedModel, int, int]], batch: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Calibrated scores and thresholds ``(N, C)`` of every annotation over the current options."""
    labels = list(state.options)
    n = len(state.annotations)
    probs = np.zeros((n, len(labels)))
    thresholds = np.full((n, len(labels)), 0.5)
    rows = np.array([int(a.key) for a in state.annotations], dtype=np.int64)
    for model, first, stop in scorers:
        tagger = Tagger(model, device=model.model.device, batch_size=256)
        feats = encode_images(model, state.pool.images[rows[first:stop]], batch)
        probs[first:stop] = tagger.probabilities(feats, labels)
        thresholds[first:stop] = tagger.calibrator.thresholds(labels)
    return probs, thresholds


def _review(
    state: SimulationState,
    annotator: CorruptingAnnotator | TeamAnnotator,
    seed: int,
    flag_fraction: float,
    probs: NDArray[np.float64],
    thresholds: NDArray[np.float64],
    scorer: str,
) -> LabelQualityResult:
    annotations = state.annotations
    labels = LabelSet(tuple(state.options))
    targets = correction_targets(labels, annotations)
    review = review_labels(probs, targets, list(labels), thresholds)
    flagged = {annotations[i].key for i in review.flagged(flag_fraction).tolist()}
    corrupted = annotator.corrupted
    by_kind = {
        kind: (
            sum(1 for key, (k, _) in corrupted.items() if k == kind and key in flagged),
            sum(1 for k, _ in corrupted.values() if k == kind),
        )
        for kind in ("missing", "wrong")
    }
    found = sum(f for f, _ in by_kind.values())
    return LabelQualityResult(
        seed=seed,
        tasks=len(annotations),
        corrupted=len(corrupted),
        flagged=len(flagged),
        found=found,
        found_by_kind=by_kind,
        recall=found / len(corrupted) if corrupted else float("nan"),
        random_recall=len(flagged) / len(annotations) if annotations else float("nan"),
        scorer=scorer,
    )
