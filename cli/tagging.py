"""`assistant tag` and `assistant demo`: tag image files with any vocabulary, in-process.

No Label Studio, no Redis: the model runs here. Heavy imports (torch, the model) happen inside
the commands so that `assistant --help` stays fast.

Never a silently random model: without ``--model`` the commands load ``ASSISTANT_BASE_MODEL``.
Only when that is the bundled model (``assets/world-tiny``) and it is missing (a checkout where it
was not built yet) do they fall back to a tiny randomly initialised model, and then they say so:
a warning on stderr, a note in the tables, and ``"random_model": true`` with a ``"warning"`` in
``tag --json``. Any other model that cannot be loaded is an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.registry_help import backbone_spec_help

if TYPE_CHECKING:
    from PIL.Image import Image

    from assistant.checkpoint import LoadedModel
    from assistant.inference import ImageTags

__all__ = ["demo", "tag"]

logger = logging.getLogger(__name__)
console = Console()
err_console = Console(stderr=True)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# The architecture used when the bundled model is missing (a fresh checkout before it was built).
FALLBACK_ARCH = "test-tiny"


@dataclass(frozen=True)
class _Model:
    """The model the command runs, and whether it is the random stand-in for a missing bundled one."""

    loaded: LoadedModel
    source: str
    random_model: bool = False
    warning: str | None = None


def _load(model: str | None, device: str) -> _Model:
    """Load ``--model``, else ``ASSISTANT_BASE_MODEL``; a random stand-in only for a missing bundled model."""
    from assistant.checkpoint import load_model
    from state.settings import get_settings

    source = model or get_settings().base_model
    if model is None and _is_missing_bundled_model(source):
        import torch

        torch.manual_seed(0)
        warning = (
            f"the bundled model was not found at {source}: using a tiny RANDOMLY INITIALISED model "
            f"({FALLBACK_ARCH}); its tags are meaningless. Fix: build it with `assistant world pretrain`, "
            "or pass --model / set ASSISTANT_BASE_MODEL"
        )
        err_console.print(f"[bold red]warning:[/] {warning}")
        return _Model(load_model(FALLBACK_ARCH, device=device, allow_random=True), FALLBACK_ARCH, True, warning)
    return _Model(load_model(source, device=device), source)


def _is_missing_bundled_model(source: str) -> bool:
    from state import settings  # the module, not the name: read when called (tests move it)

    path = Path(source.removeprefix("local-dir:"))
    return path.resolve() == settings.BUNDLED_MODEL_DIR.resolve() and not path.exists()


def _open_images(paths: list[Path]) -> tuple[list[Path], list[Image]]:
    from PIL import Image as PILImage
    from PIL import ImageOps

    from assistant.errors import DataError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    if not files:
        raise DataError("no images given", fix="pass image files or a folder of images")
    images = []
    for file in files:
        try:
            with PILImage.open(file) as im:
                images.append(ImageOps.exif_transpose(im).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {file}", why=str(exc), fix="pass PNG, JPEG or WebP files") from exc
    return files, images


def _print_tags(files: list[Path], results: list[ImageTags], top: int, truth: dict[str, list[str]] | None) -> None:
    totals = {"shown": 0, "right": 0, "true": 0}
    for file, tags in zip(files, results, strict=True):
        table = Table(title=file.name, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("tag")
        table.add_column("score", justify="right")
        table.add_column("kind")
        table.add_column("pre-annotated", justify="center")
        if truth is not None:
            table.add_column("true", justify="center")
        shown = [t for t in tags.tags if t.selected][:top] or list(tags.tags[:3])
        for t in shown:
            row = [t.label, f"{t.score:.3f}", "seen" if t.seen else "[magenta]novel[/]", "yes" if t.selected else "-"]
            if truth is not None:
                row.append("yes" if t.label in truth.get(file.name, []) else "-")
            table.add_row(*row)
        console.print(table)
        if truth is not None:
            true = set(truth.get(file.name, []))
            chosen = [t.label for t in tags.selected()]
            right = sum(label in true for label in chosen)
            totals["shown"] += len(chosen)
            totals["right"] += right
            totals["true"] += len(true)
            console.print(f"  truth: {', '.join(truth.get(file.name, []))}")
            console.print(f"  pre-annotates {len(chosen)} tags, {right} right, of {len(true)} true tags\n")
    if truth is not None and results:
        _print_saving(len(results), totals["shown"], totals["right"], totals["true"])


def _print_saving(images: int, shown: int, right: int, true: int) -> None:
    """What the pre-annotations would save an annotator, against labeling the same images from scratch."""
    edits = (shown - right) + (true - right)  # remove each wrong tag shown, add each true tag not shown
    saving = f"{1 - edits / true:.0%}" if true else "-"
    console.print(
        f"Pre-annotation (tags with a probability of at least 0.5): {shown / images:.1f} tags per image, "
        f"{right} of {shown} right. An annotator would make {edits} edits (remove the wrong ones, add the "
        f"missing true ones) against {true} from scratch: {saving} of the work saved."
    )


def _demo_vocabulary(meta: dict[str, object]) -> list[str]:
    """The sample set's vocabulary: listed in labels.json, else the benchmark world's 65 labels."""
    listed = meta.get("vocabulary")
    if isinstance(listed, list):
        return [str(x) for x in listed]
    from benchworld.world.vocabulary import default_vocabulary

    return list(default_vocabulary().names)


def tag(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.", show_default=False)],
    labels: Annotated[str, typer.Option("--labels", "-l", help="Comma-separated vocabulary, e.g. 'cat,dog,snow'.")],
    model: Annotated[
        str | None,
        typer.Option(help=backbone_spec_help("ASSISTANT_BASE_MODEL")),
    ] = None,
    top: Annotated[int, typer.Option(help="Show at most this many tags per image.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Tag images with any vocabulary: ranked tags with calibrated scores, seen or novel."""
    from assistant.inference import Tagger
    from errors import AssistantError

    vocabulary = [x.strip() for x in labels.split(",") if x.strip()]
    if not vocabulary:
        raise AssistantError("the vocabulary is empty", fix="pass --labels 'cat,dog'")
    files, opened = _open_images(images)
    chosen = _load(model, device)
    tagger = Tagger(chosen.loaded, device=device)
    results = tagger.tag(opened, vocabulary)
    if json_output:
        doc = {
            "model": chosen.source,
            "model_version": tagger.version,
            # True: the bundled model is missing and the tags come from a random model.
            "random_model": chosen.random_model,
            "warning": chosen.warning,
            "images": [
                {
                    "image": str(f),
                    "tags": [
                        {"label": t.label, "score": round(t.score, 5), "seen": t.seen, "selected": t.selected}
                        for t in r.tags[:top]
                    ],
                }
                for f, r in zip(files, results, strict=True)
            ],
        }
        console.print_json(json.dumps(doc))
        return
    _print_model(chosen, tagger.version)
    _print_tags(files, results, top, None)


def _print_model(chosen: _Model, version: str) -> None:
    if chosen.random_model:
        console.print(f"[bold red]NOTE:[/] {chosen.warning}")
    console.print(f"model: {chosen.source} (version {version})")


def demo(
    samples: Annotated[Path, typer.Option(help="Folder of sample images with a labels.json.")] = Path("samples"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    top: Annotated[int, typer.Option(help="Tags shown per image.")] = 6,
) -> None:
    """Pre-annotate the bundled sample images with the offline model (no Label Studio or Redis needed)."""
    from assistant.inference import Tagger
    from errors import AssistantError

    meta_path = samples / "labels.json"
    if not meta_path.is_file():
        raise AssistantError(f"{meta_path} is missing", fix="run the demo from the repository root")
    meta = json.loads(meta_path.read_text())
    truth: dict[str, list[str]] = {k: list(v) for k, v in meta["labels"].items()}
    vocabulary = _demo_vocabulary(meta)
    files, opened = _open_images([samples / name for name in truth])
    chosen = _load(None, device)
    tagger = Tagger(chosen.loaded, device=device)
    results = tagger.tag(opened, vocabulary)
    seen = sum(tagger.model.is_seen(vocabulary))
    _print_model(chosen, tagger.version)
    console.print(
        f"vocabulary of {len(vocabulary)} tags: {seen} seen in training, "
        f"{len(vocabulary) - seen} [magenta]novel[/] (zero-shot)\n"
    )
    _print_tags(files, results, top, truth)
