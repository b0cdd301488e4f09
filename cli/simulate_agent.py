"""`assistant simulate agent`: the agent's whole loop on the benchmark world, against a fixed schedule.

A simulated project receives its tasks in batches and a few novel labels mid-way; a simulated
annotator labels them (the agent's queue first) starting from the latest pre-annotation. The agent
(the production policy, ``assistant/agent_policy.py``) pre-annotates, re-scores, runs rounds,
re-predicts and selects; the fixed schedule pre-annotates every import once and trains once at the
end. Both pre-annotate as the product does (``docs/preannotation.md``): the break-even rule, the
project's calibration refit every ``--refit-every`` annotations, the per-tag guard. Prints, per
checkpoint, the edits the annotator made against labeling the same tasks from scratch and the test
mAP, then the summary (label errors from ``--automation-bias`` included), and writes
``agent-simulation.json``, ``agent-vs-fixed.png`` (mAP against annotations),
``agent-vs-fixed-edits.png`` (against tag edits, and against the same tasks from scratch),
``agent-vs-fixed-effort.png`` (cumulative edits per annotation against from scratch) and
``agent-simulation.md`` into ``--out``.

Examples:
    assistant simulate agent --base-model local-dir:var/world-model --quick       # minutes on 2 cores
    assistant simulate agent --base-model local-dir:var/world-model --budget 600 --threshold 150
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from cli.registry_help import strategy_names
from cli.simulation_base import AutomationBias, Guard, RefitEvery, WorldVersion

__all__ = ["agent"]


def agent(
    base_model: Annotated[
        str | None,
        typer.Option("--base-model", help="A world-pretrained model: checkpoint dir or spec (default: settings)."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A small project that runs in minutes on 2 cores (ignores the size options)."),
    ] = False,
    budget: Annotated[int, typer.Option("--budget", min=1, help="Annotations in all.")] = 400,
    pool: Annotated[int, typer.Option("--pool", min=1, help="Tasks the project receives in all.")] = 600,
    imports: Annotated[int, typer.Option("--imports", min=1, help="Import batches.")] = 2,
    per_tick: Annotated[int, typer.Option("--per-tick", min=1, help="Annotations between two looks.")] = 25,
    threshold: Annotated[int, typer.Option("--threshold", min=0, help="The agent's round threshold.")] = 100,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Tasks per selected batch.")] = 75,
    low_water: Annotated[int, typer.Option("--low-water", min=0, help="Queue low-water mark.")] = 25,
    strategy: Annotated[
        str, typer.Option("--strategy", help=f"The agent's selection strategy: {strategy_names()}.")
    ] = "saving",
    novel: Annotated[str, typer.Option("--novel", help="Labels added mid-way (world labels).")] = "zebra,pink,sand",
    test_images: Annotated[int, typer.Option("--test-images", min=10, help="World test images for the curves.")] = 1000,
    automation_bias: AutomationBias = 0.05,
    refit_every: RefitEvery = None,
    guard: Guard = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pool, split, annotator and strategies.")] = 0,
    threads: Annotated[int, typer.Option("--threads", min=0, help="torch threads (0: torch's default).")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Folder for the JSON, PNGs and Markdown.")] = Path(
        "var/agent-simulation"
    ),
    world: WorldVersion = "world-v2",
) -> None:
    """Simulate the agent against a fixed schedule: mAP against annotation effort."""
    from rich.console import Console

    from assistant.agent_policy import PolicyConfig
    from benchworld.simulation.agent import AgentSimConfig, plot_agent_simulation, quick_config, simulate_agent
    from cli.progress import ProgressBars, progress_bars
    from cli.simulation_base import load_base, serving_config, world_of

    console = Console()
    labels = tuple(s.strip() for s in novel.split(",") if s.strip())
    if quick:
        cfg = quick_config(seed)
        cfg = dataclasses.replace(cfg, novel_labels=labels, policy=dataclasses.replace(cfg.policy, strategy=strategy))
    else:
        cfg = AgentSimConfig(
            pool_images=pool,
            imports=imports,
            budget=budget,
            annotations_per_tick=per_tick,
            novel_labels=labels,
            policy=PolicyConfig(
                round_threshold=threshold, queue_low_water=low_water, batch_size=batch, strategy=strategy
            ),
            test_images=test_images,
            seed=seed,
        )
    cfg = dataclasses.replace(
        cfg, automation_bias=automation_bias, serving=serving_config(refit_every, guard), world=world_of(world)
    )
    source, base = load_base(base_model, threads)
    with progress_bars(console) as progress:
        result = simulate_agent(base, cfg, progress=ProgressBars(progress))
    table = result.table()
    console.print(table, highlight=False, soft_wrap=True)
    out.mkdir(parents=True, exist_ok=True)
    pngs = plot_agent_simulation(result, out)
    (out / "agent-simulation.json").write_text(json.dumps({"base_model": source, **result.to_json()}, indent=1) + "\n")
    decisions = "\n".join(
        f"{d['at']}  {d['action']:<11} {d['status']:<8} {d['reason']}" for d in result.agent.decisions
    )
    serving = json.dumps(cfg.serving.as_dict())
    (out / "agent-simulation.md").write_text(
        f"# The agent against a fixed schedule ({source})\n\n"
        f"Pre-annotation: {serving}; automation bias {cfg.automation_bias:g}.\n\n```\n{table}\n```\n\n"
        f"## The agent's decisions\n\n```\n{decisions}\n```\n"
    )
    console.print(f"Wrote {', '.join(str(p) for p in pngs)}, {out / 'agent-simulation.json'}.", highlight=False)
