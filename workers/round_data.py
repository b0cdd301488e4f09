"""A round's dataset from Label Studio: export annotations through the SDK, turn them into targets, fetch images.

Label Studio is the source of truth (its webhooks are one-try, so the ledger may miss events):
every round re-reads the project's annotations with ``projects.exports.as_json``, the parent
predictions with ``predictions.list`` and the labeling config with ``projects.get``. For each
task, the **latest** non-cancelled annotation counts. Its chosen tags are positives; the tags of
the prediction it started from (``parent_prediction``) that it removed are hard negatives; the
other options follow the rule of :mod:`assistant.corrections` (negative when the option existed
when the annotation was made, unknown when it was added later).

When an option was added is read from the project's **label history**
(``<models_dir>/rounds/<project>/labels.json``): the first round that sees a label in the
config records the time; labels present at the first round ever are taken as always present.

The labeling config is parsed here with the same rules as ``backends.controls`` (workers may not
import the HTTP edge; ``tests/workers/test_round_data.py`` checks that both agree): ``Choices``
and ``Taxonomy`` tags on an ``<Image>``, a choice's model label is its ``value`` or each name of
``predicted_values``, taxonomy nodes are paths (choosing ``Animal / Cat`` implies ``Animal``), and
``model_skip="true"`` controls are left out. A choice with several model labels says one of them
is present, not which: it yields no positive, but all of them as hard negatives when removed.

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
import xml.etree.ElementTree as ET  # nosec B405 - the config comes from our own Label Studio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assistant.corrections import AnnotatedImage
from state.contracts import ImageRef
from workers.errors import MediaError, WorkerError
from workers.feature_cache import FeatureCache
from workers.images import decode_image
from workers.media import MediaFetcher

__all__ = [
    "PATH_SEPARATOR",
    "AnnotationSource",
    "Control",
    "ExportedTask",
    "FetchReport",
    "LabelHistory",
    "RoundDataError",
    "RoundVocabulary",
    "SdkAnnotationSource",
    "StoredImage",
    "exported_tasks",
    "fetch_images",
    "parse_vocabulary",
    "shown_labels",
]

logger = logging.getLogger(__name__)

PATH_SEPARATOR = " / "
_KNOB_SKIP = "model_skip"
_PREDICTED_VALUES = "predicted_values"


class RoundDataError(WorkerError):
    """The project's config or annotations cannot make a round dataset."""


# --------------------------------------------------------------------------------------------------
# The labeling config
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """One image-tagging control.

    Attributes:
        name: Its ``name`` (the ``from_name`` of its results).
        taxonomy: True for ``<Taxonomy>``, False for ``<Choices>``.
        value_key: The task data key of its image.
        targets: Target key (a choice's output, or a taxonomy path joined by ``" / "``) to its
            model labels, in config order.
    """

    name: str
    taxonomy: bool
    value_key: str
    targets: dict[str, tuple[str, ...]]

    def keys(self, value: Mapping[str, Any]) -> list[str]:
        """Target keys a result item's ``value`` names, with the taxonomy ancestors they imply."""
        if self.taxonomy:
            paths = value.get("taxonomy")
            keys = [
                PATH_SEPARATOR.join(p[:n])
                for p in (paths if isinstance(paths, list) else [])
                if isinstance(p, list) and all(isinstance(s, str) for s in p)
                for n in range(1, len(p) + 1)
            ]
        else:
            chosen = value.get("choices")
            keys = [c for c in chosen if isinstance(c, str)] if isinstance(chosen, list) else []
        return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class RoundVocabulary:
    """The image-tagging controls of a config and the ordered union of their model labels."""

    controls: tuple[Control, ...]
    labels: tuple[str, ...]

    def control(self, name: str) -> Control | None:
        """The control called ``name``, or None (another control, or a skipped one)."""
        return next((c for c in self.controls if c.name == name), None)


def _output(choice: ET.Element) -> str | None:
    return choice.get("alias") or choice.get("value")


def _model_labels(choice: ET.Element, default: str) -> tuple[str, ...]:
    raw = choice.get(_PREDICTED_VALUES)
    names = tuple(dict.fromkeys(n.strip() for n in (raw or "").split(",") if n.strip()))
    return names or (default,)


def _choices(element: ET.Element) -> dict[str, tuple[str, ...]]:
    targets: dict[str, tuple[str, ...]] = {}
    for choice in element.iter("Choice"):
        output = _output(choice)
        if output is not None and output not in targets:
            targets[output] = _model_labels(choice, choice.get("value") or output)
    return targets


def _nodes(element: ET.Element, prefix: tuple[ET.Element, ...] = ()) -> Iterable[tuple[ET.Element, ...]]:
    for child in element:
        if child.tag == "Choice" and _output(child) is not None:
            yield (*prefix, child)
            yield from _nodes(child, (*prefix, child))


def _taxonomy(element: ET.Element) -> dict[str, tuple[str, ...]]:
    leafs_only = element.get("leafsOnly", "false").lower() == "true"
    nodes = list(_nodes(element))
    names = [node[-1].get("value") or _output(node[-1]) for node in nodes]
    targets: dict[str, tuple[str, ...]] = {}
    for node, name in zip(nodes, names, strict=True):
        leaf = node[-1]
        if leafs_only and any(child.tag == "Choice" for child in leaf):
            continue
        path = tuple(_output(n) or "" for n in node)
        # A node name used twice gets its value path as the model label (as backends.controls).
        unique = names.count(name) == 1
        default = name if unique and name else PATH_SEPARATOR.join(n.get("value") or _output(n) or "" for n in node)
        targets.setdefault(PATH_SEPARATOR.join(path), _model_labels(leaf, default))
    return targets


def parse_vocabulary(config: str) -> RoundVocabulary:
    """The image-tagging controls of a labeling config (see the module docstring).

    Raises:
        RoundDataError: Not XML, or no ``Choices``/``Taxonomy`` with options on an ``<Image>``.
    """
    try:
        root = ET.fromstring(config)  # nosec B314 - our Label Studio's config
    except ET.ParseError as exc:
        raise RoundDataError("the project's labeling config is not valid XML", why=str(exc)) from exc
    images = {
        e.get("name"): (e.get("value") or "")[1:]
        for e in root.iter()
        if e.tag == "Image" and (e.get("value") or "").startswith("$")
    }
    controls: list[Control] = []
    for element in root.iter():
        if element.tag not in ("Choices", "Taxonomy") or element.get(_KNOB_SKIP, "").lower() == "true":
            continue
        image = next((n.strip() for n in (element.get("toName") or "").split(",") if n.strip() in images), None)
        if image is None:
            continue
        targets = _taxonomy(element) if element.tag == "Taxonomy" else _choices(element)
        if targets:
            controls.append(Control(element.get("name") or "", element.tag == "Taxonomy", images[image], targets))
    labels = tuple(dict.fromkeys(label for c in controls for names in c.targets.values() for label in names))
    if not labels:
        raise RoundDataError(
            "the project's labeling config has no image-tagging options",
            fix='add <Choices name="tags" toName="image" choice="multiple"> with <Choice value="..."/> children',
        )
    return RoundVocabulary(tuple(controls), labels)


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


def _parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def shown_labels(history: Mapping[str, str], labels: Sequence[str], annotated_at: dt.datetime | None) -> frozenset[str]:
    """The labels that were options when an annotation was made (unknown time: the always-present ones)."""
    shown = []
    for label in labels:
        first = history.get(label, LabelHistory.ALWAYS)
        since = _parse_time(first)
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


def _latest(annotations: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    usable = [a for a in annotations if isinstance(a, Mapping) and not a.get("was_cancelled")]
    if not usable:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(usable, key=lambda a: (_parse_time(a.get("updated_at") or a.get("created_at")) or epoch, a.get("id", 0)))


def _labels_of(vocab: RoundVocabulary, items: Any) -> tuple[set[str], set[str], set[str]]:
    """(single model labels of chosen targets, every model label of chosen targets, controls touched)."""
    sure: set[str] = set()
    every: set[str] = set()
    touched: set[str] = set()
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        control = vocab.control(str(item.get("from_name", "")))
        value = item.get("value")
        if control is None or not isinstance(value, Mapping):
            continue
        touched.add(control.name)
        for key in control.keys(value):
            names = control.targets.get(key)
            if names is None:
                continue  # an option the config no longer has
            every.update(names)
            if len(names) == 1:
                sure.add(names[0])
    return sure, every, touched


def exported_tasks(
    tasks: Iterable[Mapping[str, Any]],
    predictions: Mapping[int, Mapping[str, Any]],
    vocab: RoundVocabulary,
    history: Mapping[str, str],
) -> tuple[list[ExportedTask], dict[str, int]]:
    """Annotated tasks of an export as round annotations (see the module docstring).

    Args:
        tasks: ``projects.exports.as_json`` output (tasks with their annotations).
        predictions: Prediction id -> prediction (``result``), for the parent predictions.
        vocab: The current config's vocabulary.
        history: The label history (:class:`LabelHistory`).

    Returns:
        The usable tasks, and counts of what was skipped and why.
    """
    out: list[ExportedTask] = []
    skipped = {"unannotated_or_cancelled": 0, "no_image": 0}
    value_key = vocab.controls[0].value_key
    for task in tasks:
        annotation = _latest(task.get("annotations") or [])
        data = task.get("data") or {}
        url = data.get(value_key) if isinstance(data, Mapping) else None
        if annotation is None:
            skipped["unannotated_or_cancelled"] += 1
            continue
        if not isinstance(url, str) or not url:
            skipped["no_image"] += 1
            continue
        positives, _, _ = _labels_of(vocab, annotation.get("result"))
        parent = predictions.get(int(annotation.get("parent_prediction") or 0))
        _, predicted, _ = _labels_of(vocab, parent.get("result") if parent else None)
        when = _parse_time(annotation.get("updated_at") or annotation.get("created_at"))
        task_id = int(task["id"])
        out.append(
            ExportedTask(
                task_id,
                url,
                AnnotatedImage(
                    key=str(task_id),
                    positives=frozenset(positives),
                    hard_negatives=frozenset(predicted - positives),
                    shown=shown_labels(history, vocab.labels, when),
                    annotation_id=int(annotation["id"]) if annotation.get("id") is not None else None,
                ),
            )
        )
    return out, skipped


class AnnotationSource(Protocol):
    """What a round reads from Label Studio (the SDK in production, a fake in unit tests)."""

    def label_config(self, project: int) -> str:
        """The project's labeling config XML."""
        ...

    def export(self, project: int) -> list[dict[str, Any]]:
        """The project's tasks with their annotations (``projects.exports.as_json``)."""
        ...

    def predictions(self, project: int) -> dict[int, dict[str, Any]]:
        """The project's predictions by id."""
        ...


class SdkAnnotationSource:
    """:class:`AnnotationSource` over ``label_studio_sdk``.

    Args:
        url: Label Studio's base URL.
        api_key: A legacy token or a personal access token.
        timeout: Seconds per request (an export of a large project takes a while).
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 300.0) -> None:
        from label_studio_sdk.client import LabelStudio

        if not api_key:
            raise RoundDataError(
                "no Label Studio API key is configured",
                fix="set ASSISTANT_LABEL_STUDIO_API_KEY (or LABEL_STUDIO_API_KEY) to an access token",
            )
        self.sdk = LabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=timeout)  # type: ignore[no-untyped-call]

    def label_config(self, project: int) -> str:
        """See :meth:`AnnotationSource.label_config`."""
        return str(self.sdk.projects.get(id=project).label_config or "")

    def export(self, project: int) -> list[dict[str, Any]]:
        """See :meth:`AnnotationSource.export`."""
        exported: list[dict[str, Any]] = self.sdk.projects.exports.as_json(project)
        return exported

    def predictions(self, project: int) -> dict[int, dict[str, Any]]:
        """See :meth:`AnnotationSource.predictions`."""
        found: dict[int, dict[str, Any]] = {}
        for raw in self.sdk.predictions.list(project=project):
            doc = raw if isinstance(raw, dict) else raw.model_dump(mode="json")
            if doc.get("id") is not None:
                found[int(doc["id"])] = doc
        return found


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
