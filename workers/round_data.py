"""A round's dataset from Label Studio: read the export, turn it into targets, fetch images.

Label Studio is the source of truth (its webhooks are one-try, so the ledger may miss events):
every round re-reads the labeling config, the project's annotations and the parent predictions
through the one client (:class:`studio.client.LabelStudioClient`), parses the config with the one
parser (:func:`studio.config.parse_label_config`, the same vocabulary ``/setup`` and ``/predict``
serve) and reads the export with :func:`studio.export.read_export`. For each task, the **latest**
non-cancelled annotation counts. Its chosen tags are positives; the tags of the prediction it
started from (``parent_prediction``) that it removed are hard negatives; the other options follow
the rule of :mod:`assistant.corrections` (negative when the option existed when the annotation
was made, unknown when it was added later).

When an option was added is read from the project's **label history**
(``<models_dir>/rounds/<project>/labels.json``): the first round that sees a label in the
config records the time; labels present at the first round ever are taken as always present.

Images are downloaded with the workers' :class:`~workers.media.MediaFetcher` (every URL form,
token, limit), checked by decoding, and stored content-addressed under
``<home>/round-images/<sha256[:2]>/<sha256>``; the source index of the feature cache remembers
which content a URL served, so later rounds skip the download.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assistant.corrections import AnnotatedImage
from assistant.labels import LabelSet
from state.contracts import ImageRef
from studio.config import parse_label_config
from studio.controls import ProjectVocabulary
from studio.export import parse_time, read_export
from workers.errors import MediaError, WorkerError
from workers.feature_cache import FeatureCache
from workers.images import decode_image
from workers.media import MediaFetcher

__all__ = [
    "AnnotationSource",
    "ExportedTask",
    "FetchReport",
    "LabelHistory",
    "RoundDataError",
    "StoredImage",
    "exported_tasks",
    "fetch_images",
    "round_labels",
    "shown_labels",
]

logger = logging.getLogger(__name__)


class RoundDataError(WorkerError):
    """The round's own state (the label history) cannot be read."""


# --------------------------------------------------------------------------------------------------
# The label set
# --------------------------------------------------------------------------------------------------
def round_labels(config: str) -> tuple[ProjectVocabulary, LabelSet]:
    """The vocabulary of a project's labeling config and the label set a round trains.

    The vocabulary comes from the one parser (:func:`studio.config.parse_label_config`), so the
    label set is the one ``/setup`` and ``/predict`` serve; a config prediction refuses, a round
    refuses with the same error.

    Raises:
        LabelConfigError: The config has no usable image-tagging control, or a value the model
            cannot use (the message says which, and the fix).
    """
    vocab = parse_label_config(config)
    return vocab, LabelSet(vocab.labels)


# --------------------------------------------------------------------------------------------------
# When each option appeared
# --------------------------------------------------------------------------------------------------
class LabelHistory:
    """When each label was first seen in the project's config (``labels.json``, written atomically).

    Args:
        path: The JSON file.
    """

    # Labels present when the history starts are taken as always present.
    ALWAYS = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, str]:
        """Label -> ISO time of its first sighting (``""``: always present)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise RoundDataError(f"the label history {self.path} is not valid JSON", why=str(exc)) from exc
        return {str(k): str(v) for k, v in dict(doc.get("labels", {})).items()}

    def update(self, labels: Sequence[str], now: dt.datetime | None = None) -> dict[str, str]:
        """Record the labels not seen before (at ``now``) and return the whole history."""
        history = self.load()
        stamp = self.ALWAYS if not history else (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
        new = [label for label in labels if label not in history]
        if new:
            history.update(dict.fromkeys(new, stamp))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".labels.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"labels": history}, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            logger.info("label history %s: %d new labels (%s)", self.path, len(new), stamp or "always")
        return history


def shown_labels(history: Mapping[str, str], labels: Sequence[str], annotated_at: dt.datetime | None) -> frozenset[str]:
    """The labels that were options when an annotation was made (unknown time: the always-present ones)."""
    shown = []
    for label in labels:
        first = history.get(label, LabelHistory.ALWAYS)
        since = parse_time(first)
        if since is None or (annotated_at is not None and annotated_at >= since):
            shown.append(label)
    return frozenset(shown)


# --------------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportedTask:
    """One annotated task, ready for a round.

    Attributes:
        task_id: The Label Studio task.
        image_url: Its image (the first active control's data key).
        annotation: What the annotator said (``key`` is the task id; ``item`` is filled in once
            the image's content hash is known).
    """

    task_id: int
    image_url: str
    annotation: AnnotatedImage


def exported_tasks(
    tasks: Iterable[Mapping[str, Any]],
    predictions: Mapping[int, Mapping[str, Any]],
    vocab: ProjectVocabulary,
    history: Mapping[str, str],
) -> tuple[list[ExportedTask], dict[str, int]]:
    """Annotated tasks of an export as round annotations (see the module docstring).

    Args:
        tasks: ``LabelStudioClient.export`` output (tasks with their annotations).
        predictions: Prediction id -> prediction (``studio.export.prediction_index``), for the
            parent predictions.
        vocab: The current config's vocabulary.
        history: The label history (:class:`LabelHistory`).

    Returns:
        The usable tasks, and counts of what was skipped and why.
    """
    found, unannotated = read_export(tasks, predictions, vocab)
    skipped = {"unannotated_or_cancelled": unannotated, "no_image": 0}
    value_key = vocab.value_keys[0]
    out: list[ExportedTask] = []
    for task in found:
        url = task.data.get(value_key)
        if not isinstance(url, str) or not url:
            skipped["no_image"] += 1
            continue
        correction = task.correction
        out.append(
            ExportedTask(
                task.task_id,
                url,
                AnnotatedImage(
                    key=str(task.task_id),
                    positives=frozenset(correction.positive_labels),
                    hard_negatives=frozenset(correction.negative_labels),
                    shown=shown_labels(history, vocab.labels, task.annotated_at),
                    annotation_id=task.annotation_id,
                ),
            )
        )
    return out, skipped


class AnnotationSource(Protocol):
    """What a round reads from Label Studio (:class:`studio.client.LabelStudioClient`; a fake in unit tests)."""

    def label_config(self, project: int) -> str:
        """The project's labeling config XML."""
        ...

    def export(self, project: int) -> list[dict[str, Any]]:
        """The project's tasks with their annotations (``projects.exports.as_json``)."""
        ...

    def predictions(self, project: int) -> list[dict[str, Any]]:
        """The project's predictions (id, task, result, model_version)."""
        ...


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredImage:
    """A task's image on local disk."""

    task_id: int
    path: Path
    content_hash: str


@dataclass
class FetchReport:
    """What :func:`fetch_images` did."""

    downloaded: int = 0
    reused: int = 0
    failed: dict[int, str] = field(default_factory=dict)


def _store(root: Path, data: bytes, digest: str) -> Path:
    path = root / digest[:2] / digest
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".img.", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    return path


def fetch_images(
    tasks: Sequence[ExportedTask],
    fetcher: MediaFetcher,
    root: Path,
    *,
    cache: FeatureCache | None = None,
    max_pixels: int = 100_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[StoredImage], FetchReport]:
    """Local copies of the tasks' images (downloaded once; see the module docstring).

    A task whose image cannot be fetched or decoded is left out and reported, never fatal.
    """
    report = FetchReport()
    refs = [ImageRef(key=str(t.task_id), url=t.image_url, task_id=t.task_id) for t in tasks]
    infos = [fetcher.source_info(ref) for ref in refs]
    known = cache.lookup_sources([i for i in infos if i is not None]) if cache is not None else {}

    def one(i: int) -> tuple[StoredImage | None, bool, str | None]:
        info = infos[i]
        digest = known.get(info.key) if info is not None else None
        if digest is not None and (root / digest[:2] / digest).is_file():
            return StoredImage(tasks[i].task_id, root / digest[:2] / digest, digest), True, None
        try:
            data = fetcher.fetch(refs[i])
            decode_image(data, max_pixels=max_pixels)  # refuse what training could not read
        except MediaError as exc:
            return None, False, f"{exc.reason}: {exc.message}"
        digest = hashlib.sha256(data).hexdigest()
        if cache is not None and info is not None:
            cache.record_sources([(info, digest)])
        return StoredImage(tasks[i].task_id, _store(root, data, digest), digest), False, None

    stored: list[StoredImage] = []
    for done, (image, reused, error) in enumerate(fetcher.pool.map(one, range(len(tasks))), start=1):
        if image is None:
            report.failed[tasks[done - 1].task_id] = error or "error"
        else:
            stored.append(image)
            report.reused += int(reused)
            report.downloaded += int(not reused)
        if progress is not None:
            progress(done, len(tasks))
    if report.failed:
        logger.warning(
            "%d round images could not be fetched: %s", len(report.failed), dict(list(report.failed.items())[:5])
        )
    return stored, report
