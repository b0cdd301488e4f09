"""`assistant world stats`: the generated world's statistics against the real-data targets.

Prints each statistic (prevalence curve, co-occurrence lift, photo-series share, the web stream's
own frequencies) next to its target, tolerance and source (``benchworld.world.stats.TARGETS``),
and with ``--model`` the camera shift's cost to that frozen model. Exits non-zero when a target
is missed, so CI can run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["stats"]

console = Console()
err_console = Console(stderr=True)


def stats(
    world: Annotated[str, typer.Option(help="World version (world-v2 or world-v1).")] = "world-v2",
    images: Annotated[int, typer.Option(min=200, help="Pool and pretraining images to measure.")] = 4000,
    model: Annotated[
        str | None, typer.Option(help="Also measure the camera shift's gap for this frozen model (e.g. local-dir:DIR).")
    ] = None,
    gap_images: Annotated[int, typer.Option(min=100, help="Test images for the shift gap.")] = 2000,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the statistics here.")] = None,
) -> None:
    """Measure the generated world and compare it with the real-data targets it is matched to."""
    from benchworld.world.config import world_config
    from benchworld.world.stats import TARGETS, measure_world

    cfg = world_config(world)
    measured = measure_world(cfg, images)
    gap = None if model is None else _shift_gap(model, cfg, gap_images)
    table = Table(title=f"{world}: {images:,} pool images (and as many pretraining images)")
    for column in ("statistic", "measured", "target", "accepted", "ok", "source"):
        table.add_column(column)
    for name, value in measured.values.items():
        t = TARGETS.get(name)
        if t is None:
            table.add_row(name, f"{value:.3f}", "", "", "", "")
        else:
            ok = "yes" if t.holds(value) else "[red]no[/]"
            table.add_row(name, f"{value:.3f}", f"{t.target:.3f}", f"[{t.low}, {t.high}]", ok, t.source)
    console.print(table)
    console.print(
        "highest-lift frequent object pairs: " + ", ".join(f"{a}/{b} {x:.1f}" for a, b, x in measured.top_pairs)
    )
    if gap is not None:
        console.print(
            f"camera shift, frozen zero-shot on {gap['test_images']:,} test images: ZSL mAP "
            f"{gap['zsl_mAP_unshifted']:.1f} unshifted -> {gap['zsl_mAP_shifted']:.1f} shifted "
            f"(gap {gap['zsl_gap']:+.1f}); GZSL {gap['gzsl_mAP_unshifted']:.1f} -> {gap['gzsl_mAP_shifted']:.1f}"
        )
    if json_path is not None:
        doc = {"version": world, "images": images, "values": measured.values, "top_pairs": measured.top_pairs}
        doc["targets"] = {k: t.__dict__ for k, t in TARGETS.items()}
        doc["shift_gap"] = gap
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    failures = measured.failures()
    for failure in failures:
        err_console.print(f"[red]missed:[/] {failure}")
    if failures:
        raise typer.Exit(code=1)


def _shift_gap(model: str, world: Any, count: int) -> dict[str, Any]:
    from assistant.factory import create_backbone
    from benchworld.world import generate_split
    from benchworld.world.bench import shift_gap

    backbone = create_backbone(model)
    shifted = generate_split("test", count, world)
    plain = generate_split("test", count, world.without_camera())
    return shift_gap(backbone, shifted, plain)
