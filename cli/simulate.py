"""`assistant simulate rounds`: a simulated labeling project on the benchmark world, round after round.

A simulated annotator corrects the model's pre-annotations from the world's ground truth,
``--images-per-round`` images per round; novel labels join the options mid-way; every round
trains, compares and promotes exactly as the production rounds; the model in service
pre-annotates as the product does (break-even rule, project calibration refit, guard). Prints the
table (with each round's edits against labeling the same tasks from scratch) and writes
``simulation.png`` (mAP per round, seen and novel), ``simulation-effort.png`` (edits per task
against from scratch, per round), ``simulation.json`` and ``simulation.md``.

Examples:
    assistant simulate rounds                                    # the bundled world model, 6 x 100 images
    assistant simulate rounds --base-model local-dir:var/world-model --rounds 8 --novel zebra,pink,sand
    assistant simulate rounds --degrade-round 4                  # show the promotion gate refusing a bad round
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli import simulate_agent as _simulate_agent
from cli import simulate_al as _simulate_al
from cli.simulation_base import AutomationBias, Guard, RefitEvery, WorldVersion

__all__ = ["rounds", "simulate_app"]

simulate_app = typer.Typer(help="Offline simulations on the benchmark world.", no_args_is_help=True)


def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


@simulate_app.command("rounds")
def rounds(
    base_model: Annotated[
        str | None,
        typer.Option("--base-model", help="A world-pretrained model: checkpoint dir or spec (default: settings)."),
    ] = None,
    n_rounds: Annotated[int, typer.Option("--rounds", min=1, help="Fine-tuning rounds.")] = 6,
    images_per_round: Annotated[int, typer.Option("--images-per-round", min=1, help="Annotations per round.")] = 100,
    novel: Annotated[str, typer.Option("--novel", help="Labels added mid-way (world labels).")] = "zebra,pink,sand",
    novel_round: Annotated[int, typer.Option("--novel-round", min=0, help="0: rounds // 2 + 1.")] = 0,
    initial: Annotated[
        str, typer.Option("--initial", help="Initial options (default: the world's 49 seen labels).")
    ] = "",
    stages: Annotated[str, typer.Option("--stages", help="stage1, stage2 or both.")] = "stage1,stage2",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Stage-1 epochs per round.")] = 6,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0, help="mAP points a candidate may lose.")] = 0.5,
    degrade_round: Annotated[
        list[int] | None,
        typer.Option("--degrade-round", help="Train this round with 100x learning rates (repeatable)."),
    ] = None,
    test_images: Annotated[int, typer.Option("--test-images", min=10, help="World test images for the curves.")] = 1000,
    automation_bias: AutomationBias = 0.05,
    refit_every: RefitEvery = None,
    guard: Guard = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the annotator.")] = 0,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", min=0, help="torch threads (0: settings' ASSISTANT_TORCH_THREADS, else torch's default)."
        ),
    ] = 0,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG, JSON and Markdown table.")] = Path(
        "var/simulation"
    ),
    world: WorldVersion = "world-v2",
) -> None:
    """Simulate a labeling project: corrections, fine-tuning rounds, promotion; print and plot mAP per round."""
    import dataclasses

    from rich.console import Console

    from assistant.rounds import RoundConfig
    from benchworld.simulation import SimulationConfig, plot_simulation, plot_simulation_effort, simulate_rounds
    from cli.progress import ProgressBars, progress_bars
    from cli.simulation_base import load_base, serving_config, world_of

    console = Console()
    base_cfg = RoundConfig()
    cfg = SimulationConfig(
        rounds=n_rounds,
        images_per_round=images_per_round,
        initial_labels=_split(initial),
        novel_labels=_split(novel),
        novel_round=novel_round,
        test_images=test_images,
        round=dataclasses.replace(
            base_cfg,
            stages=_split(stages),  # type: ignore[arg-type]
            tolerance=tolerance,
            stage1=dataclasses.replace(base_cfg.stage1, epochs=epochs),
        ),
        degrade_rounds=tuple(degrade_round or ()),
        automation_bias=automation_bias,
        serving=serving_config(refit_every, guard),
        seed=seed,
        world=world_of(world),
    )
    source, base = load_base(base_model, threads)
    with progress_bars(console) as progress:
        result = simulate_rounds(base, cfg, progress=ProgressBars(progress))
    table = result.table()
    console.print(table, highlight=False, soft_wrap=True)
    console.print(result.novel_summary(), highlight=False)
    console.print(result.effort_summary(), highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_simulation(result, out / "simulation.png")
    effort_png = plot_simulation_effort(result, out / "simulation-effort.png")
    (out / "simulation.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    (out / "simulation.md").write_text(
        f"# Simulated rounds ({source})\n\n```\n{table}\n\n{result.novel_summary()}\n{result.effort_summary()}\n```\n"
    )
    bad = result.violations()
    console.print(
        f"Promotions below the tolerance: {bad or 'none'}. Wrote {png}, {effort_png}, {out / 'simulation.json'}.",
        highlight=False,
    )


# Active learning (its own module: cli/simulate_al.py).
simulate_app.command("al")(_simulate_al.active_learning)
simulate_app.command("label-quality")(_simulate_al.label_quality)
simulate_app.command("label-quality-ceiling")(_simulate_al.label_quality_ceiling)
# The agent against a fixed schedule (its own module: cli/simulate_agent.py).
simulate_app.command("agent")(_simulate_agent.agent)
