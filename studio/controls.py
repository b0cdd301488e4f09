"""The image-tagging controls of a labeling config, and the project vocabulary built from them.

One strategy class per control tag, as in the label-studio-ml yolo example's ``control_models``:
:class:`ChoicesControl` and :class:`TaxonomyControl`. Each knows its targets (the choices, or the
taxonomy's nodes as paths from the root), its ``model_*`` knobs, how to write a result item's
``value`` for a selection and how to read one back. :class:`ProjectVocabulary` is every such
control of a config plus the ordered union of their model labels, which is what a
``state.contracts.PredictRequest`` carries. :func:`studio.config.parse_label_config` builds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from preannotation import EditCosts
from state.contracts import vocabulary_fingerprint
from studio.errors import LabelConfigError

__all__ = [
    "KNOB_COST_ADD",
    "KNOB_COST_REMOVE",
    "KNOB_MAX_TAGS",
    "KNOB_SKIP",
    "KNOB_THRESHOLD",
    "PATH_SEPARATOR",
    "PREDICTED_VALUES",
    "ChoicesControl",
    "Knobs",
    "ProjectVocabulary",
    "TagControl",
    "Target",
    "TaxonomyControl",
]

KNOB_THRESHOLD = "model_threshold"
KNOB_MAX_TAGS = "model_max_tags"
KNOB_SKIP = "model_skip"
KNOB_COST_ADD = "model_cost_add"
KNOB_COST_REMOVE = "model_cost_remove"
PREDICTED_VALUES = "predicted_values"
# Joins a taxonomy path into one key (score maps, corrections); spaces keep "A/B" names intact.
PATH_SEPARATOR = " / "


# --- the pieces of a control --------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One selectable output of a control: a choice, or a taxonomy node.

    Attributes:
        path: Output strings from the root (``("cat",)`` for a choice).
        model_labels: The vocabulary labels that score this target (their max is its score).
        threshold: A per-choice ``model_threshold``, overriding the control's and the model's.
    """

    path: tuple[str, ...]
    model_labels: tuple[str, ...]
    threshold: float | None = None

    @property
    def key(self) -> str:
        """The target's key in score maps and corrections (a taxonomy path joined with `` / ``)."""
        return PATH_SEPARATOR.join(self.path)

    @property
    def value(self) -> str:
        """The output string of the target itself (the last path element)."""
        return self.path[-1]


@dataclass(frozen=True)
class Knobs:
    """Per-control settings read from ``model_*`` attributes (see the module docstring)."""

    threshold: float | None = None
    max_tags: int | None = None
    skip: bool = False
    cost_add: float | None = None
    cost_remove: float | None = None

    def edit_costs(self, default: EditCosts) -> EditCosts:
        """The control's edit costs: its own ``model_cost_*`` over ``default`` (the project's)."""
        if self.cost_add is None and self.cost_remove is None:
            return default
        return EditCosts(
            default.add if self.cost_add is None else self.cost_add,
            default.remove if self.cost_remove is None else self.cost_remove,
        )


@dataclass(frozen=True)
class TagControl:
    """An image-tagging control tag (base of the per-tag strategies).

    Attributes:
        name: The control's ``name`` (``from_name`` of its results).
        to_name: The ``<Image>`` it tags.
        value_key: The task data key of that image (``$image`` gives ``image``).
        targets: Its selectable outputs, in config order.
        knobs: Its ``model_*`` settings.
        multiple: Whether several tags may be selected.
    """

    tag: ClassVar[str] = ""
    result_type: ClassVar[str] = ""

    name: str
    to_name: str
    value_key: str
    targets: tuple[Target, ...]
    knobs: Knobs = field(default_factory=Knobs)
    multiple: bool = True

    @property
    def max_tags(self) -> int | None:
        """The most tags a prediction may select (1 for single-choice controls)."""
        if not self.multiple:
            return 1
        return self.knobs.max_tags

    @property
    def model_labels(self) -> tuple[str, ...]:
        """The control's model labels, ordered and without repeats."""
        return tuple(dict.fromkeys(label for target in self.targets for label in target.model_labels))

    def target(self, key: str) -> Target | None:
        """The target with this key, or None."""
        return next((t for t in self.targets if t.key == key), None)

    def result_value(self, selected: Sequence[Target]) -> dict[str, Any]:
        """The ``value`` of a result item selecting ``selected``."""
        raise NotImplementedError

    def keys_from_value(self, value: Mapping[str, Any]) -> list[str]:
        """Target keys named by a result item's ``value`` (annotations, predictions)."""
        raise NotImplementedError

    def prune(self, selected: Sequence[Target]) -> list[Target]:
        """Drop selections another selection already implies (none for flat choices)."""
        return list(selected)

    def implied_keys(self, keys: Sequence[str]) -> list[str]:
        """``keys`` plus the keys they imply (none for flat choices)."""
        return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class ChoicesControl(TagControl):
    """``<Choices>`` on an image: ``{"choices": ["cat", "dog"]}``."""

    tag: ClassVar[str] = "Choices"
    result_type: ClassVar[str] = "choices"

    def result_value(self, selected: Sequence[Target]) -> dict[str, Any]:
        """``{"choices": [...]}`` with the selected output strings."""
        return {"choices": [t.value for t in selected]}

    def keys_from_value(self, value: Mapping[str, Any]) -> list[str]:
        """The chosen strings of ``{"choices": [...]}`` (anything else names none)."""
        chosen = value.get("choices")
        return [c for c in chosen if isinstance(c, str)] if isinstance(chosen, list) else []


@dataclass(frozen=True)
class TaxonomyControl(TagControl):
    """``<Taxonomy>`` on an image: each selected node is a path from the root.

    ``{"taxonomy": [["Animal", "Cat"]]}``, with ``type: "taxonomy"`` (the yolo example emits
    ``"choices"``, which neither validates nor renders as a taxonomy).
    """

    tag: ClassVar[str] = "Taxonomy"
    result_type: ClassVar[str] = "taxonomy"

    def result_value(self, selected: Sequence[Target]) -> dict[str, Any]:
        """``{"taxonomy": [[root, ..., node], ...]}``."""
        return {"taxonomy": [list(t.path) for t in selected]}

    def keys_from_value(self, value: Mapping[str, Any]) -> list[str]:
        """The selected paths of ``{"taxonomy": [[...], ...]}``, joined into keys."""
        paths = value.get("taxonomy")
        if not isinstance(paths, list):
            return []
        return [PATH_SEPARATOR.join(p) for p in paths if isinstance(p, list) and all(isinstance(s, str) for s in p)]

    def prune(self, selected: Sequence[Target]) -> list[Target]:
        """Drop a selected node when one of its selected descendants already names it in its path.

        ``[["Animal"], ["Animal", "Cat"]]`` shows the annotator two chips for one fact; keeping
        ``[["Animal", "Cat"]]`` also lets ``model_max_tags`` count specific tags only.
        """
        ancestors = {t.path[:n] for t in selected for n in range(1, len(t.path))}
        return [t for t in selected if t.path not in ancestors]

    def implied_keys(self, keys: Sequence[str]) -> list[str]:
        """``keys`` plus every ancestor of each path (choosing Animal / Cat says Animal is present)."""
        out: list[str] = []
        for key in keys:
            parts = key.split(PATH_SEPARATOR)
            out.extend(PATH_SEPARATOR.join(parts[:n]) for n in range(1, len(parts) + 1))
        return list(dict.fromkeys(out))


# --- the vocabulary -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectVocabulary:
    """The image-tagging controls of one labeling config and the labels the model must score.

    Attributes:
        controls: Every image-tagging control, in config order (skipped ones included).
        labels: The ordered union of the active controls' model labels: ``PredictRequest.labels``.
    """

    controls: tuple[TagControl, ...]
    labels: tuple[str, ...]

    @property
    def active(self) -> tuple[TagControl, ...]:
        """The controls the model predicts for (``model_skip`` ones left out)."""
        return tuple(c for c in self.controls if not c.knobs.skip)

    @property
    def fingerprint(self) -> str:
        """:func:`state.contracts.vocabulary_fingerprint` of :attr:`labels`."""
        return vocabulary_fingerprint(list(self.labels))

    @property
    def value_keys(self) -> tuple[str, ...]:
        """The task data keys holding the active controls' images, without repeats."""
        return tuple(dict.fromkeys(c.value_key for c in self.active))

    def tag_costs(self, default: EditCosts) -> dict[str, EditCosts]:
        """Target key → its control's edit costs, for the active controls that set their own.

        Tags of the other controls are served (and judged by the guard) under ``default``, the
        project's costs. Two controls with a target of the same key: the first control wins, as
        tags are counted by key.
        """
        out: dict[str, EditCosts] = {}
        for control in self.active:
            costs = control.knobs.edit_costs(default)
            if costs != default:
                for target in control.targets:
                    out.setdefault(target.key, costs)
        return out

    def model_version(self, checkpoint_version: str) -> str:
        """The ``model_version`` Label Studio sees: ``<checkpoint>+<fingerprint>``."""
        return f"{checkpoint_version}+{self.fingerprint}"

    def control(self, name: str) -> TagControl:
        """The image-tagging control called ``name``.

        Raises:
            LabelConfigError: No image-tagging control has that name.
        """
        for control in self.controls:
            if control.name == name:
                return control
        raise LabelConfigError(
            f"unknown control name {name!r}",
            why=f"the labeling config's image-tagging controls are {[c.name for c in self.controls]}",
            fix="use one of those names, or add the control to the labeling config",
        )
