"""`assistant world ...` and `assistant bench`: the offline benchmark world.

- `world build`: generate the train/val/test splits (deterministic) under the home directory.
- `world pretrain`: contrastive pretraining of the tiny open_clip model; saves an open_clip
  model directory with its manifest (the project ships the result as `assets/world-tiny`).
- `world calibrate`: fit the model directory's calibration prior (`calibration.json`) on the
  world's validation split; `world pretrain` does it too, at the end.
- `world reliability`: how far a model's calibrated probabilities are from the truth (ECE, a
  reliability diagram) on validation-stream images its prior was not fitted on, and what the
  pre-annotation rule would show from them.
- `world samples`: regenerate the sample images of `make demo`.
- `bench`: the ML-ZSL table (random, frozen zero-shot, MKT stage 1, stage 1 + 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from errors import AssistantError

if TYPE_CHECKING:
    from assistant.prior import PriorFit
    from benchworld.world.dataset import MultiLabelSplit

__all__ = ["bench", "world_app"]

console = Console()
world_app = typer.Typer(
    help="The offline benchmark world: build the data, pretrain the tiny model.", no_args_is_help=True
)

DEFAULT_ASSET = Path("assets/world-tiny")


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None, info="")

        def update(done: int, total: int, figures: dict[str, float]) -> None:
            info = " ".join(f"{k} {v:.3g}" for k, v in figures.items())
            bar.update(task, completed=done, total=total, info=info)

        yield update


# The world version every command uses unless told otherwise; world-v1 stays reproducible by name.
WORLD_HELP = "World version: world-v2 (the default: long tail, context, photo series, camera) or world-v1."
DEFAULT_WORLD = "world-v2"


def _world_dir(quick: bool, version: str = DEFAULT_WORLD) -> Path:
    from state.settings import get_settings

    # v1's splits keep their old place, so a cache built before v2 stays valid.
    base = get_settings().home / "world"
    return (base if version == "world-v1" else base / version) / ("quick" if quick else "full")


def _splits(quick: bool, version: str = DEFAULT_WORLD) -> dict[str, MultiLabelSplit]:
    """Load the splits of a world version, building them first when missing or stale."""
    from assistant.errors import DataError
    from benchworld.world import FULL_SIZES, QUICK_SIZES, build_world, load_world

    directory = _world_dir(quick, version)
    try:
        return load_world(directory, version=version)
    except (DataError, FileNotFoundError, OSError):
        pass
    sizes = QUICK_SIZES if quick else FULL_SIZES
    with _progress(f"generating the {'quick' if quick else 'full'} {version}") as update:
        build_world(
            directory, _world_config(version), sizes=sizes, progress=lambda split, done, total: update(done, total, {})
        )
    return load_world(directory, version=version)


@world_app.command("build")
def build(
    quick: Annotated[bool, typer.Option(help="The small splits (2,000 / 500 / 1,000 images).")] = False,
    world: Annotated[str, typer.Option(help=WORLD_HELP)] = DEFAULT_WORLD,
) -> None:
    """Generate the world's train / validation / test splits (deterministic, cached)."""
    splits = _splits(quick, world)
    for name, split in splits.items():
        console.print(f"{name}: {len(split)} images, data hash {split.data_hash[:16]}")
    console.print(f"in {_world_dir(quick, world)}")


@world_app.command("samples")
def samples(out: Annotated[Path, typer.Option(help="Where to write them.")] = Path("samples")) -> None:
    """Regenerate the sample images and their labels (used by `make demo`)."""
    from benchworld.world import write_samples

    console.print(f"wrote {write_samples(out)}")


@world_app.command("pretrain")
def pretrain(
    out: Annotated[Path, typer.Option(help="Output open_clip model directory.")] = DEFAULT_ASSET,
    steps: Annotated[int, typer.Option(help="Optimiser steps of --batch-size pairs.")] = 560,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 256,
    arch: Annotated[str, typer.Option(help="Registered open_clip architecture.")] = "world-tiny",
    seed: Annotated[int, typer.Option(help="Seed of the initialisation.")] = 0,
    max_minutes: Annotated[
        float, typer.Option(help="Stop past this wall time; the cosine schedule then follows the clock (recorded).")
    ] = 60.0,
    quick_eval: Annotated[bool, typer.Option(help="Score zero-shot on the quick test split.")] = False,
    world: Annotated[str, typer.Option(help=WORLD_HELP)] = DEFAULT_WORLD,
) -> None:
    """Pretrain the tiny open_clip model contrastively on the world (the offline stand-in for CLIP).

    Ends by fitting the model's calibration prior on the validation split (see `world calibrate`).
    """
    from benchworld.world.bench import frozen_scores
    from benchworld.world.pretrain import PretrainConfig, save_open_clip_dir, stream_hash
    from benchworld.world.pretrain import pretrain as run_pretrain

    cfg = PretrainConfig(
        arch=arch, steps=steps, batch_size=batch_size, seed=seed, max_minutes=max_minutes, time_schedule=True
    )
    if out.exists() and any(out.iterdir()):
        raise AssistantError(f"{out} is not empty", fix="pass another --out or remove it")
    world_cfg = _world_config(world)
    with _progress(f"pretraining {arch} on {cfg.pairs:,} pairs of {world}") as update:
        backbone, result = run_pretrain(cfg, world_cfg, progress=update)
    manifest: dict[str, Any] = {
        "config": cfg.__dict__,
        "seed": seed,
        "generator_version": world,
        "data_hash": stream_hash(world_cfg, cfg, backbone.context_length),
        "pairs": result.pairs,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "pairs_per_second": round(result.pairs / max(result.seconds, 1e-9), 1),
        "stopped_early": result.stopped_early,
        "training_curve": result.curve,
    }
    # Saved before the evaluation: minutes of training are never lost to a failure after them.
    save_open_clip_dir(backbone, arch, out, manifest)
    splits = _splits(quick_eval, world)
    test = splits["test"]
    scores = _zero_shot_summary(backbone, test, frozen_scores)
    if world_cfg.camera is not None:
        scores["shift_gap"] = _shift_gap(backbone, world_cfg, test)
    manifest["zero_shot"] = scores
    save_open_clip_dir(backbone, arch, out, manifest)
    console.print(
        f"{result.pairs:,} pairs in {result.seconds / 60:.1f} min ({manifest['pairs_per_second']} pairs/s); "
        f"zero-shot ZSL mAP {scores['zsl']['mAP']:.1f} (random {scores['random_zsl_mAP']:.1f}), "
        f"GZSL mAP {scores['gzsl']['mAP']:.1f}"
    )
    _fit_and_write_prior(out, splits["val"], quick_eval, "cpu")
    console.print(f"saved to {out} (load it as local-dir:{out})")


@world_app.command("calibrate")
def calibrate(
    model: Annotated[Path, typer.Option(help="The open_clip model directory.")] = DEFAULT_ASSET,
    quick: Annotated[bool, typer.Option(help="Fit on the quick validation split (500 images).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "cpu",
) -> None:
    """Fit the model's calibration prior on the world's validation split (seen labels) and save it.

    Writes `calibration.json` into the model directory (and records it in its `manifest.json`);
    loading the directory as a backbone then maps raw scores through it instead of the CLIP
    ViT-B default. Never uses the test split.
    """
    from assistant.prior import model_directory

    directory = model_directory(str(model))
    val = _splits(quick)["val"]
    _fit_and_write_prior(directory, val, quick, device)


@world_app.command("reliability")
def reliability_command(
    model: Annotated[str, typer.Option(help="A model directory or checkpoint (any load_model spec).")] = (
        f"local-dir:{DEFAULT_ASSET}"
    ),
    images: Annotated[int, typer.Option(min=10, help="Validation-stream images to check on.")] = 2000,
    first: Annotated[
        int,
        typer.Option(min=0, help="First validation-stream image (default: after the 2,000 the prior is fitted on)."),
    ] = 2000,
    bins: Annotated[int, typer.Option(min=2, help="Reliability bins.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "cpu",
    out: Annotated[Path, typer.Option(help="Folder for reliability.png and reliability.json.")] = Path(
        "var/reports/reliability"
    ),
) -> None:
    """Check a model's calibration: ECE and a reliability diagram on validation images it was not fitted on.

    Scores every world label on validation-stream images as they are served (the model's own
    calibrator: a directory's prior, or a checkpoint's), separately for the labels a prior is fitted
    on (the world's seen labels) and the others (scored zero-shot, as a project's novel tags are).
    Also prints what the pre-annotation rule (show from p = 0.5) would cost against labeling the
    same images from scratch. Never uses the test stream.
    """
    from assistant.checkpoint import load_model
    from assistant.plots import plot_reliability
    from assistant.prior import check_calibration
    from benchworld.simulation.annotator import render_labeled
    from benchworld.world import WorldConfig, default_vocabulary
    from benchworld.world.config import Stream

    vocab = default_vocabulary()
    # The prior is fitted on the seen labels; the unseen ones are scored zero-shot (a project's novel tags).
    groups = {"seen": list(vocab.seen_names), "unseen": list(vocab.unseen_names)}
    loaded = load_model(model, device=device)
    with _progress(f"rendering {images:,} validation-stream images") as update:
        data = render_labeled(Stream.VAL, images, WorldConfig(), first=first, progress=lambda d, t: update(d, t, {}))
    checks = {}
    for name, labels in groups.items():
        with _progress(f"scoring {name}") as update:
            checks[name] = check_calibration(
                loaded,
                data.images,
                data.targets(labels) > 0,
                labels,
                bins=bins,
                device=device,
                progress=lambda d, t: update(d, t, {}),
            )
    table = Table(
        title=f"Calibration of {model} ({loaded.calibrator.method}) on validation images {first}-{first + images - 1}"
    )
    for column in ("labels", "entries", "ECE", "max gap", "over", "shown", "precision", "edits/scratch"):
        table.add_column(column, justify="right" if column != "labels" else "left")
    for name, check in checks.items():
        rel, effort = check.reliability, check.effort
        over = "-" if rel.overconfidence is None else f"{rel.overconfidence:+.3f}"
        shown = (effort.kept + effort.removed) / max(1, effort.tasks)
        precision = "-" if effort.precision is None else f"{effort.precision:.2f}"
        ratio = "-" if effort.ratio is None else f"{effort.ratio:.3f}"
        table.add_row(
            name, f"{rel.count:,}", f"{rel.ece:.3f}", f"{rel.max_gap:.3f}", over, f"{shown:.2f}", precision, ratio
        )
    console.print(table)
    console.print(
        "over: mean probability minus frequency over the bins from 0.5 up (positive: overstated confidence); "
        "shown: tags per image the rule shows (p >= 0.5); edits/scratch: its edits against labeling from scratch"
    )
    out.mkdir(parents=True, exist_ok=True)
    png = plot_reliability(
        {f"{name} labels": c.reliability for name, c in checks.items()},
        out / "reliability.png",
        f"Reliability of {Path(model.removeprefix('local-dir:')).name} ({loaded.calibrator.method})",
    )
    doc = {
        "model": model,
        "calibrator": loaded.calibrator.method,
        "data": {"stream": "val", "first": first, "images": images, "world": vocab.version},
        "groups": {name: c.summary() for name, c in checks.items()},
    }
    (out / "reliability.json").write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {png} and {out / 'reliability.json'}")


def _fit_and_write_prior(directory: Path, val: MultiLabelSplit, quick: bool, device: str) -> PriorFit:
    """Fit the prior on the seen labels of ``val`` (the only ones annotated there) and write it."""
    from assistant.prior import fit_backbone_prior, write_prior

    columns = [i for i, s in enumerate(val.seen) if s]
    labels = [val.label_names[i] for i in columns]
    with _progress(f"scoring {len(val):,} validation images") as update:
        fit = fit_backbone_prior(
            directory,
            val.images,
            val.targets[:, columns],
            labels,
            device=device,
            progress=lambda done, total: update(done, total, {}),
        )
    provenance = {
        "data": {
            "split": "val",
            "world": "quick" if quick else "full",
            "data_hash": val.data_hash,
            "version": val.version,
            "labels": "seen",
        },
        "scores": "cosine fused, default HeadConfig and PromptConfig (what load_model serves)",
    }
    path = write_prior(directory, fit, provenance=provenance)
    cal, raw = fit.calibrator, fit.summary()["raw_threshold"]
    console.print(
        f"calibration prior: p = sigmoid({cal.slope:.2f} * s {cal.intercept:+.2f}), threshold {cal.threshold:.3f}"
        + ("" if raw is None else f" (raw score {raw:.4f})")
        + f"; on {fit.images:,} validation images x {fit.labels} seen labels: precision {fit.precision:.3f}, "
        f"recall {fit.recall:.3f}, F1 {fit.f1:.3f}"
    )
    console.print(f"wrote {path}")
    return fit


def _world_config(version: str = DEFAULT_WORLD) -> Any:
    from benchworld.world.config import world_config

    return world_config(version)


def _shift_gap(backbone: Any, world: Any, shifted: MultiLabelSplit) -> dict[str, Any]:
    """The camera shift's cost to the frozen model: the same test scenes without the camera."""
    from benchworld.world import generate_split
    from benchworld.world.bench import shift_gap

    return shift_gap(backbone, shifted, generate_split("test", len(shifted), world.without_camera()))


def _zero_shot_summary(backbone: Any, test: MultiLabelSplit, frozen_scores: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    from assistant.evaluate import evaluate_gzsl, evaluate_zsl
    from benchworld.world import default_vocabulary

    vocab = default_vocabulary()
    labels = list(test.label_names)
    with torch.no_grad():
        pixels = _eval_pixels(backbone, test)
        feats = backbone.encode_image(pixels)
    unseen = [n for n, s in zip(labels, test.seen, strict=True) if not s]
    zsl = evaluate_zsl(frozen_scores(backbone, feats, unseen), test.targets, labels, test.seen)
    gzsl = evaluate_gzsl(frozen_scores(backbone, feats, labels), test.targets, labels)
    rng = np.random.default_rng(0)
    random_zsl = evaluate_zsl(rng.random((len(test), len(unseen))), test.targets, labels, test.seen)
    from assistant.evaluate import per_label_ap

    aps = per_label_ap(frozen_scores(backbone, feats, labels), test.targets)
    by_kind: dict[str, float] = {}
    for kind in sorted({vocab.spec(n).kind.value for n in labels}):
        idx = [i for i, n in enumerate(labels) if vocab.spec(n).kind.value == kind]
        by_kind[kind] = round(100 * float(np.mean(aps[idx])), 2)
    return {
        "method": "class token, prompt ensemble (benchworld.world.bench.WORLD_PROMPTS)",
        "test_images": len(test),
        "test_data_hash": test.data_hash,
        "zsl": zsl,
        "gzsl": gzsl,
        "random_zsl_mAP": random_zsl["mAP"],
        "mAP_by_kind": by_kind,
    }


def _eval_pixels(backbone: Any, split: MultiLabelSplit) -> Any:
    import torch

    from assistant.data import eval_transform

    transform = eval_transform(backbone)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2)
    return torch.stack([transform(im) for im in images])


def bench(
    quick: Annotated[bool, typer.Option(help="Small splits and short training: under 5 minutes on 2 cores.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every number and config here.")] = None,
    model: Annotated[str, typer.Option(help="The pretrained world model.")] = f"local-dir:{DEFAULT_ASSET}",
    save_model: Annotated[Path | None, typer.Option(help="Save the MKT stage 1 + 2 checkpoint here.")] = None,
    distill: Annotated[
        list[float] | None, typer.Option(help="Distillation weights to select from on validation.")
    ] = None,
) -> None:
    """The ML-ZSL table on the world: random, frozen zero-shot, MKT stage 1, MKT stage 1 + 2."""
    from assistant.checkpoint import save_checkpoint
    from benchworld.world.bench import BenchConfig, run_bench

    cfg = BenchConfig()
    if quick:
        cfg = replace(cfg, stage1=replace(cfg.stage1, epochs=3), stage2=replace(cfg.stage2, epochs=3))
    if distill:
        cfg = replace(cfg, distill_weights=tuple(distill))
    splits = _splits(quick)
    with _progress("training") as update:
        result, mkt = run_bench(splits, model, cfg, status=lambda m: console.print(f"- {m}"), progress=update)
    _print_table(result.rows)
    console.print(f"selection (validation, seen labels): {json.dumps(result.selection)}")
    for mode, m in result.margins.items():
        console.print(
            f"MKT stage 1 + 2 minus frozen, {mode.upper()} mAP: {m['difference']:+.2f} "
            f"(95% paired bootstrap over test images: {m['low']:+.2f} to {m['high']:+.2f})"
        )
    console.print(f"seconds: {json.dumps(result.seconds)}")
    if json_path is not None:
        doc = {
            "rows": [r.__dict__ for r in result.rows],
            "config": result.config,
            "data": result.data,
            "selection": result.selection,
            "margins": result.margins,
            "seconds": result.seconds,
            "model": model,
            "quick": quick,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        console.print(f"wrote {json_path}")
    if save_model is not None:
        sidecar = save_checkpoint(
            mkt,
            save_model,
            version=f"world-mkt-{result.data['hashes']['train'][:8]}",
            metrics={
                f"test_{k}_{m}": v for r in result.rows[-1:] for k in ("zsl", "gzsl") for m, v in getattr(r, k).items()
            },
            extra={"bench": {"quick": quick, "config": result.config}},
        )
        console.print(f"saved MKT checkpoint {sidecar.version} to {save_model}")


def _print_table(rows: list[Any]) -> None:
    table = Table(title="ML-ZSL on the benchmark world (test split; percent)")
    table.add_column("method")
    for setting in ("ZSL", "GZSL"):
        for metric in ("mAP", "F1@3", "F1@5"):
            table.add_column(f"{setting} {metric}", justify="right")
    for row in rows:
        cells = [f"{row.zsl[m]:.1f}" for m in ("mAP", "F1@3", "F1@5")]
        cells += [f"{row.gzsl[m]:.1f}" for m in ("mAP", "F1@3", "F1@5")]
        table.add_row(row.method, *cells)
    console.print(table)
