"""Label Studio results and label sets: what an annotation says about each model label.

A result item names targets of one control (``{"choices": [...]}``, or taxonomy paths); the
vocabulary (:mod:`studio.config`) maps each target to its model labels. An annotation compared
with the prediction it started from gives a :class:`Correction`:

- **positives**: the chosen targets and the targets they imply (a taxonomy node implies its
  ancestors); their model labels are present when a target has exactly one (a choice mapped from
  several model labels with ``predicted_values`` says one of them is present, not which);
- **negatives**: predicted targets the annotator removed; every model label behind them is a hard
  negative, unless another chosen target names it.

The backend's effort counting, the agent and the rounds all read annotations with this module, so
a correction means the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from studio.controls import ProjectVocabulary, TagControl
from studio.errors import StudioError
from studio.protocol import Annotation, Prediction, ResultItem

__all__ = ["ControlCorrection", "Correction", "annotation_to_correction", "keys_by_control"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlCorrection:
    """What an annotator said about one control.

    Attributes:
        control: The control's name.
        positives: Target keys the annotator chose, plus those they imply (taxonomy ancestors).
        negatives: Target keys that were predicted and removed (hard negatives); empty when the
            parent prediction is unknown.
        positive_labels: Model labels that are certainly present: those of chosen targets with a
            single model label. A choice mapped from several model labels (``predicted_values``)
            says one of them is present, not which, so it yields none.
        negative_labels: Every model label of the removed targets.
        unknown: Chosen keys that match no target (the config changed since).
    """

    control: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    positive_labels: tuple[str, ...] = ()
    negative_labels: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class Correction:
    """An annotation turned into training signal.

    Attributes:
        task_id: The task.
        annotation_id: The annotation.
        parent_prediction: The prediction it started from, when known.
        prediction_version: That prediction's ``model_version``, when it was given.
        cancelled: The annotator skipped the task: no signal.
        controls: One entry per image-tagging control the annotation or prediction touches.
        ignored_controls: Result ``from_name``s outside the vocabulary (other controls, skipped
            ones, or names the config no longer has).
    """

    task_id: int | None
    annotation_id: int | None
    parent_prediction: int | None
    prediction_version: str | None
    cancelled: bool
    controls: tuple[ControlCorrection, ...] = ()
    ignored_controls: tuple[str, ...] = ()

    @property
    def positive_labels(self) -> tuple[str, ...]:
        """Model labels present, over all controls."""
        return tuple(dict.fromkeys(label for c in self.controls for label in c.positive_labels))

    @property
    def negative_labels(self) -> tuple[str, ...]:
        """Model labels predicted and removed, over all controls, minus any label also present."""
        present = set(self.positive_labels)
        labels = (label for c in self.controls for label in c.negative_labels if label not in present)
        return tuple(dict.fromkeys(labels))


def keys_by_control(vocab: ProjectVocabulary, items: Sequence[ResultItem]) -> tuple[dict[str, list[str]], list[str]]:
    """Control name → the target keys result items name (as written: no implied ancestors), and the
    ``from_name``s of items outside the active controls."""
    active = {c.name: c for c in vocab.active}
    keys: dict[str, list[str]] = {}
    ignored: list[str] = []
    for item in items:
        control = active.get(item.from_name)
        if control is None:
            ignored.append(item.from_name)
            continue
        keys.setdefault(item.from_name, []).extend(control.keys_from_value(item.value))
    return keys, ignored


def _control_correction(control: TagControl, chosen: list[str], predicted: list[str]) -> ControlCorrection:
    positives = tuple(control.implied_keys(chosen))
    removed = tuple(k for k in dict.fromkeys(predicted) if k not in positives)
    targets = {t.key: t for t in control.targets}
    return ControlCorrection(
        control=control.name,
        positives=positives,
        negatives=removed,
        positive_labels=tuple(
            dict.fromkeys(
                targets[k].model_labels[0] for k in positives if k in targets and len(targets[k].model_labels) == 1
            )
        ),
        negative_labels=tuple(
            dict.fromkeys(label for k in removed if k in targets for label in targets[k].model_labels)
        ),
        # The chosen keys only: an implied ancestor that is no target (a leafsOnly taxonomy's inner
        # node) is known to the config, not a sign that the config changed.
        unknown=tuple(k for k in dict.fromkeys(chosen) if k not in targets),
    )


def annotation_to_correction(
    vocab: ProjectVocabulary, annotation: Annotation, prediction: Prediction | None = None
) -> Correction:
    """The positives (and, given the parent prediction, hard negatives) of one annotation.

    Args:
        vocab: The project's vocabulary (from the config the annotation was made with).
        annotation: The annotation (webhook payload or annotations API).
        prediction: The prediction it started from (``annotation.parent_prediction``), if the
            caller fetched it; without it there are no negatives.

    Returns:
        The correction; empty for a cancelled (skipped) annotation.

    Raises:
        StudioError: ``prediction`` is not the annotation's parent prediction.
    """
    if prediction is not None and None not in (prediction.id, annotation.parent_prediction):
        if prediction.id != annotation.parent_prediction:
            raise StudioError(
                f"prediction {prediction.id} is not the parent of annotation {annotation.id}",
                why=f"the annotation started from prediction {annotation.parent_prediction}",
                fix="pass the prediction named by annotation.parent_prediction",
            )
    correction = Correction(
        task_id=annotation.task,
        annotation_id=annotation.id,
        parent_prediction=annotation.parent_prediction,
        prediction_version=prediction.model_version if prediction is not None else None,
        cancelled=annotation.was_cancelled,
    )
    if annotation.was_cancelled:
        return correction
    chosen, ignored = keys_by_control(vocab, annotation.result)
    predicted, _ = keys_by_control(vocab, prediction.result if prediction is not None else [])
    controls = tuple(
        _control_correction(c, chosen.get(c.name, []), predicted.get(c.name, []))
        for c in vocab.active
        if c.name in chosen or c.name in predicted
    )
    return replace(correction, controls=controls, ignored_controls=tuple(dict.fromkeys(ignored)))
