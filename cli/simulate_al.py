"""`assistant simulate al` and `assistant simulate label-quality`: active learning on the benchmark world.

`simulate al` runs the fine-tuning round loop once per strategy and seed, each choosing what to
annotate with a selection strategy, and writes the learning curves (mAP on a held-out evaluation
set against labels spent): ``active-learning.json``, ``active-learning.png`` and
``active-learning.md`` in ``--out``. Each finished run is saved at once under
``--out/runs/<settings fingerprint>/``, so an interrupted simulation resumes, and several
processes with different ``--strategy`` sets can share the work (a last call aggregates).

Examples:
    assistant simulate al --base-model local-dir:var/world-model                 # every strategy, 3 seeds
    assistant simulate al --strategy hybrid --strategy random --budget 600 --rounds 6
    assistant simulate al --eval-stream val --seeds 0                            # tune on VAL, never TEST
    assistant simulate label-quality --fraction 0.05                             # corrupt 5% of the tasks
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.progress import progress_bars
from cli.registry_help import strategy_names
from cli.simulation_base import WorldVersion

if TYPE_CHECKING:
    from rich.progress import Progress

    from benchworld.simulation.active import ActiveLearningConfig, StrategyRun

__all__ = ["active_learning", "label_quality", "label_quality_ceiling"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} must be comma-separated numbers, got {text!r}") from None


BaseModel = Annotated[
    str | None,
    typer.Option("--base-model", help="A world-pretrained model: checkpoint dir or spec (default: settings)."),
]
Seeds = Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, one run each.")]
Budget = Annotated[int, typer.Option("--budget", min=1, help="Labels (annotated images) spent in all.")]
Rounds = Annotated[int, typer.Option("--rounds", min=1, help="Rounds; each spends budget / rounds labels.")]
PoolSize = Annotated[int, typer.Option("--pool", min=1, help="Unlabeled pool images per seed.")]
EvalImages = Annotated[int, typer.Option("--eval-images", min=10, help="Images of the evaluation set.")]
EvalStream = Annotated[
    str, typer.Option("--eval-stream", help="test (report) or val (tune settings without touching test).")
]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Stage-1 epochs per round.")]
Tolerance = Annotated[
    float,
    typer.Option("--tolerance", min=0.0, help="Promotion gate: mAP points a candidate may lose (100: always promote)."),
]
Threads = Annotated[int, typer.Option("--threads", min=0, help="Torch CPU threads (0: torch's default).")]
Out = Annotated[Path, typer.Option("--out", help="Folder for the JSON, PNG and Markdown files.")]


def _config(
    strategies: list[str],
    seeds: str,
    budget: int,
    rounds: int,
    pool: int,
    eval_images: int,
    stream: str,
    epochs: int,
    tolerance: float,
    world: str = "world-v2",
) -> ActiveLearningConfig:
    from assistant.selection import list_strategies
    from benchworld.simulation import SimulationConfig
    from benchworld.simulation.active import AL_ROUND, ActiveLearningConfig
    from benchworld.world.config import Stream
    from cli.simulation_base import world_of

    if stream not in ("test", "val"):
        raise typer.BadParameter(f"--eval-stream must be test or val, got {stream!r}")
    round_cfg = dataclasses.replace(
        AL_ROUND, stage1=dataclasses.replace(AL_ROUND.stage1, epochs=epochs), tolerance=tolerance
    )
    return ActiveLearningConfig(
        strategies=tuple(strategies or list_strategies()),
        seeds=_ints(seeds),
        budget=budget,
        rounds=rounds,
        pool_images=pool,
        eval_images=eval_images,
        eval_stream=Stream.TEST if stream == "test" else Stream.VAL,
        simulation=SimulationConfig(round=round_cfg, automation_bias=0.0, world=world_of(world)),
    )


class _RunBars:
    """Two rich bars: runs done, and the phase of the current run."""

    def __init__(self, progress: Progress, total_runs: int) -> None:
        self.progress = progress
        self.runs = progress.add_task("runs", total=max(1, total_runs))
        self.phase = progress.add_task("starting", total=1)

    def __call__(self, what: str, done: int, total: int) -> None:
        if what == "runs":
            self.progress.update(self.runs, completed=done)
        else:
            self.progress.update(self.phase, description=what[:60], completed=done, total=max(1, total))


def _read_runs(folder: Path) -> list[StrategyRun]:
    from benchworld.simulation.active import StrategyRun

    runs = []
    for path in sorted(folder.glob("*.json")):
        runs.append(StrategyRun(**json.loads(path.read_text())))
    return runs


def active_learning(
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            "-s",
            help=f"A strategy to run (repeatable; default: every registered one: {strategy_names()}), or an oracle "
            "that sees the truth (oracle-loss, oracle-dense: upper bounds, simulation only).",
        ),
    ] = None,
    base_model: BaseModel = None,
    seeds: Seeds = "0,1,2",
    budget: Budget = 600,
    rounds: Rounds = 6,
    pool: PoolSize = 3000,
    eval_images: EvalImages = 1000,
    eval_stream: EvalStream = "test",
    epochs: Epochs = 4,
    tolerance: Tolerance = 100.0,
    threads: Threads = 0,
    out: Out = Path("var/active-learning"),
    world: WorldVersion = "world-v2",
) -> None:
    """Learning curves of the selection strategies on the benchmark world (mAP against labels spent)."""
    from rich.console import Console

    from benchworld.simulation.active import plot_active_learning, simulate_active_learning
    from cli.simulation_base import load_base

    console = Console()
    cfg = _config(strategy or [], seeds, budget, rounds, pool, eval_images, eval_stream, epochs, tolerance, world)
    folder = out / "runs" / cfg.fingerprint()
    folder.mkdir(parents=True, exist_ok=True)
    completed = [r for r in _read_runs(folder) if r.strategy in cfg.strategies and r.seed in cfg.seeds]
    todo = len(cfg.strategies) * len(cfg.seeds) - len(completed)
    console.print(
        f"{len(cfg.strategies)} strategies x {len(cfg.seeds)} seeds; {len(completed)} runs already done in {folder}, "
        f"{todo} to run. Budget {cfg.budget} labels in {cfg.rounds} rounds of {cfg.per_round}; pool {cfg.pool_images}; "
        f"evaluation: {cfg.eval_images} {eval_stream} images.",
        highlight=False,
    )

    def save(run: StrategyRun) -> None:
        path = folder / f"{run.strategy}-seed{run.seed}.json"
        path.write_text(json.dumps(dataclasses.asdict(run), indent=1) + "\n")

    source, base = load_base(base_model, threads) if todo else (base_model or "-", None)
    with progress_bars(console, width=60) as progress:
        result = simulate_active_learning(
            base,  # type: ignore[arg-type]  # None only when nothing is left to run
            cfg,
            completed=completed,
            progress=_RunBars(progress, todo),
            on_run=save,
        )
    table = result.table()
    console.print(table, highlight=False, soft_wrap=True)
    out.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"base_model": source, **result.to_json()}
    (out / "active-learning.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    png = plot_active_learning(result, out / "active-learning.png")
    (out / "active-learning.md").write_text(f"# Active learning ({source})\n\n```\n{table}\n```\n")
    console.print(f"Wrote {png}, {out / 'active-learning.json'}, {out / 'active-learning.md'}.", highlight=False)


def label_quality(
    base_model: BaseModel = None,
    fraction: Annotated[float, typer.Option("--fraction", min=0.0, max=1.0, help="Share of tasks corrupted.")] = 0.05,
    flag: Annotated[float, typer.Option("--flag", min=0.0, max=1.0, help="Share of tasks flagged.")] = 0.05,
    seeds: Seeds = "0,1,2",
    budget: Budget = 600,
    rounds: Rounds = 6,
    eval_images: EvalImages = 500,
    epochs: Epochs = 4,
    tolerance: Tolerance = 100.0,
    scorer: Annotated[
        str,
        typer.Option(
            "--scorer",
            help="annotated: each task by the model in service when it was annotated (the prediction its annotator "
            "saw, as in production); final: all by the last round's model, which trained on most of them.",
        ),
    ] = "annotated",
    threads: Threads = 0,
    out: Out = Path("var/label-quality"),
    world: WorldVersion = "world-v2",
) -> None:
    """Corrupt a share of the annotated tasks, train rounds on them, and count what the review flags."""
    from rich.console import Console
    from rich.table import Table

    from benchworld.simulation.active import simulate_label_quality
    from cli.simulation_base import load_base

    console = Console()
    cfg = _config(["random"], seeds, budget, rounds, budget, eval_images, "val", epochs, tolerance, world)
    source, base = load_base(base_model, threads)
    with progress_bars(console, width=60) as progress:
        results = simulate_label_quality(
            base,
            cfg,
            fraction=fraction,
            flag_fraction=flag,
            scorer=scorer,
            progress=_RunBars(progress, len(cfg.seeds)),
        )
    who = (
        "the annotation team's own mistakes"
        if cfg.simulation.world.annotators
        else f"{100 * fraction:g}% of tasks corrupted"
    )
    table = Table(title=f"Label quality: {who}, top {100 * flag:g}% flagged")
    for column in ("seed", "tasks", "corrupted", "flagged", "found", "missing", "wrong", "recall", "random"):
        table.add_column(column)
    for r in results:
        missing, wrong = r.found_by_kind["missing"], r.found_by_kind["wrong"]
        table.add_row(
            str(r.seed), str(r.tasks), str(r.corrupted), str(r.flagged), str(r.found),
            f"{missing[0]}/{missing[1]}", f"{wrong[0]}/{wrong[1]}", f"{r.recall:.2f}", f"{r.random_recall:.2f}",
        )  # fmt: skip
    console.print(table)
    found, corrupted = sum(r.found for r in results), sum(r.corrupted for r in results)
    console.print(f"Flagged {found} of {corrupted} corrupted tasks over all seeds ({found / max(1, corrupted):.0%}).")
    tasks, flagged = sum(r.tasks for r in results), sum(r.flagged for r in results)
    console.print(
        f"Corrupted share {corrupted / max(1, tasks):.1%}; the most a flagged {100 * flag:g}% could hold: "
        f"{min(1.0, flagged / max(1, corrupted)):.0%} of them."
    )
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "base_model": source,
        "fraction": fraction,
        "flag": flag,
        "settings": {"budget": budget, "rounds": rounds, "seeds": list(cfg.seeds), "epochs": epochs, "scorer": scorer},
        "results": [dataclasses.asdict(r) for r in results],
        "recall": found / max(1, corrupted),
    }
    (out / "label-quality.json").write_text(json.dumps(document, indent=1) + "\n")
    console.print(f"Wrote {out / 'label-quality.json'}.", highlight=False)


def label_quality_ceiling(
    fraction: Annotated[float, typer.Option("--fraction", min=0.0, max=1.0, help="Share of tasks corrupted.")] = 0.05,
    flag: Annotated[float, typer.Option("--flag", min=0.0, max=1.0, help="Share of tasks flagged.")] = 0.05,
    seeds: Seeds = "0,1,2",
    budget: Budget = 600,
    rounds: Rounds = 6,
    separations: Annotated[
        str, typer.Option("--separations", help="Comma-separated separations of the synthetic scorers.")
    ] = "0.5,1,1.5,2,2.5,3,3.5,4",
    out: Out = Path("var/label-quality-ceiling"),
) -> None:
    """The label-quality check's tasks reviewed with synthetic scorers of rising quality (no training)."""
    from rich.console import Console
    from rich.table import Table

    from assistant.plots import plot_learning_curves
    from benchworld.simulation.label_quality_ceiling import label_quality_ceiling as ceiling

    console = Console()
    values = _floats(separations, "--separations")
    # Only the tasks matter (seeds, budget, rounds, options): nothing is trained or evaluated, so the
    # evaluation set and round settings are placeholders. The pool is the budget, as in label-quality.
    cfg = _config(["random"], seeds, budget, rounds, budget, 10, "val", 4, 100.0)
    with progress_bars(console, width=60) as progress:
        points = ceiling(cfg, fraction=fraction, flag_fraction=flag, separations=values, progress=_RunBars(progress, 0))
    table = Table(
        title=f"Review with synthetic scorers: {100 * fraction:g}% of tasks corrupted, top {100 * flag:g}% flagged"
    )
    for column in ("separation", "mAP of the scores", "found", "per seed", "recall"):
        table.add_column(column)
    for p in points:
        per_seed = ", ".join(str(f) for f in p.found_per_seed)
        table.add_row(f"{p.separation:g}", f"{p.map:.1f}", f"{p.found}/{p.corrupted}", per_seed, f"{p.recall:.0%}")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "fraction": fraction,
        "flag": flag,
        "settings": {"budget": budget, "rounds": rounds, "seeds": list(cfg.seeds)},
        "points": [dataclasses.asdict(p) for p in points],
    }
    (out / "label-quality-ceiling.json").write_text(json.dumps(document, indent=1) + "\n")
    maps = [p.map for p in points]
    png = plot_learning_curves(
        {
            f"flagged top {100 * flag:g}%": [(p.map, 100.0 * p.recall) for p in points],
            "target (half)": [(min(maps), 50.0), (max(maps), 50.0)],
        },
        out / "label-quality-ceiling.png",
        "mAP of the synthetic scores (%)",
        "corrupted tasks flagged (%)",
        "Label review recall against scorer quality",
    )
    console.print(f"Wrote {out / 'label-quality-ceiling.json'} and {png}.", highlight=False)
