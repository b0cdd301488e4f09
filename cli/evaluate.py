"""`assistant evaluate`: ML-ZSL metrics (mAP, F1@K, P@K, R@K) of a saved score matrix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from assistant.errors import DataError
from assistant.evaluate import DEFAULT_KS
from assistant.evaluate import evaluate as evaluate_scores

__all__ = ["evaluate"]


def _load_npy(path: Path, what: str) -> NDArray[np.generic]:
    if path.suffix != ".npy":
        raise DataError(f"The {what} file {path} is not a .npy file", fix="save it with numpy.save(path, array)")
    if not path.is_file():
        raise DataError(f"The {what} file {path} does not exist", fix="check the path")
    try:
        # allow_pickle=False: a .npy from elsewhere must never run code when loaded.
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read the {what} file {path}", why=str(e), fix="save it with numpy.save") from e


def evaluate(
    scores: Annotated[Path, typer.Option("--scores", help="Images × labels float scores (.npy).")],
    targets: Annotated[Path, typer.Option("--targets", help="Same shape: +1 present, -1 absent, 0 unknown (.npy).")],
    k: Annotated[
        list[int] | None,
        typer.Option("--k", help="K for F1@K, P@K, R@K; repeat for several.", show_default="3, 5"),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON to stdout.")] = False,
    open_images: Annotated[
        bool,
        typer.Option(
            "--open-images", help="Open Images variant: drop images without a positive, add the weighted mAP."
        ),
    ] = False,
) -> None:
    """Compute mAP and micro top-K F1/P/R (percent) exactly as the MKT/BiAM protocol.

    AP uses only the ±1 entries of each label (0 = unknown); a label without positives counts as AP 0.

    P@K divides by every image times K, images without positives included.
    """
    result = evaluate_scores(
        _load_npy(scores, "scores"),
        _load_npy(targets, "targets"),
        tuple(k) if k else DEFAULT_KS,
        open_images=open_images,
    )
    if json_output:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"Evaluation of {scores.name} against {targets.name}")
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for name, value in result.items():
        table.add_row(name, f"{value:.2f}")
    Console().print(table)
