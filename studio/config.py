"""The one labeling-config parser: a config's image-tagging controls and the project vocabulary.

:func:`parse_label_config` finds every control of :mod:`studio.controls` (``Choices``,
``Taxonomy``) attached to an ``<Image>`` (a project may have several) and builds a
:class:`~studio.controls.ProjectVocabulary`: per-control targets plus the ordered union of model
labels, which is what a ``state.contracts.PredictRequest`` carries.

**Labels.** A ``<Choice>``'s output string is ``alias`` when set, else ``value`` (what Label Studio
stores in results). Its model label (what the model scores) is ``value``, or each name of
``predicted_values="a,b"`` (several model labels onto one choice: the choice scores their max).
Taxonomy nodes are emitted as paths from the root; a node name that occurs twice in one taxonomy
gets the model label ``"Parent / Node"`` unless ``predicted_values`` says otherwise.

**One parser, one normalisation.** Prediction (``/setup``, ``/predict``), the rounds and the agent
all build their vocabulary here, so the label set a round trains is the one prediction serves.
A model label is its config text without surrounding whitespace (:func:`model_label`); the output
string Label Studio stores stays verbatim (``value="dog "`` is shown and stored as ``"dog "`` and
scored as ``dog``). A value the model cannot use is a :class:`~studio.errors.LabelConfigError`
when the config is parsed, so ``/setup`` refuses it when the model is connected: a blank value
without ``predicted_values`` (in a control the model predicts), two taxonomy nodes whose paths
join to the same key, more than ``state.contracts.MAX_LABELS`` labels.

**Knobs** (attributes of the control tag; ``model_threshold`` also works on one ``<Choice>``):

=====================  ========================================================================
``model_threshold``    a probability in [0, 1] from which a tag is shown, instead of the
                       break-even point of the edit costs (it wins over the costs)
``model_cost_add``     what adding a missing tag costs, for this control (over the settings'
                       ``ASSISTANT_EDIT_COST_ADD`` and the project's entry)
``model_cost_remove``  what removing a wrong tag costs; a tag is shown from
                       ``remove / (add + remove)`` on (``docs/preannotation.md``)
``model_max_tags``     show at most this many tags (most probable first; default 50)
``model_skip``         ``"true"`` turns the model off for this control (its labels leave the
                       vocabulary)
=====================  ========================================================================

Single-choice ``Choices`` (``choice="single"`` or ``"single-radio"``, the default) are supported
by selecting at most the top tag, and only when it passes its threshold. A Taxonomy with
``maxUsages="1"`` behaves the same; ``leafsOnly="true"`` leaves inner nodes out of the vocabulary.

Example:
    >>> vocab = parse_label_config('''<View><Image name="img" value="$image"/>
    ...   <Choices name="tags" toName="img" choice="multiple">
    ...     <Choice value="cat"/><Choice value="dog" predicted_values="dog,puppy"/>
    ...   </Choices></View>''')
    >>> vocab.labels
    ('cat', 'dog', 'puppy')
"""

from __future__ import annotations

import functools
import logging
import math
import xml.etree.ElementTree as ET  # nosec B405 - the config is already parsed by LabelInterface (lxml)
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from label_studio_sdk.label_interface.interface import LabelInterface

from state.contracts import MAX_LABELS
from studio.controls import (
    KNOB_COST_ADD,
    KNOB_COST_REMOVE,
    KNOB_MAX_TAGS,
    KNOB_SKIP,
    KNOB_THRESHOLD,
    PATH_SEPARATOR,
    PREDICTED_VALUES,
    ChoicesControl,
    Knobs,
    ProjectVocabulary,
    TagControl,
    Target,
    TaxonomyControl,
)
from studio.errors import LabelConfigError

__all__ = ["EXAMPLE_CONFIG", "PARSED_CONFIGS_KEPT", "model_label", "parse_label_config"]

logger = logging.getLogger(__name__)

EXAMPLE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" model_threshold="0.5">
    <Choice value="cat"/>
    <Choice value="dog" predicted_values="dog,puppy"/>
  </Choices>
  <Taxonomy name="taxonomy" toName="image">
    <Choice value="Animal"><Choice value="Cat"/></Choice>
  </Taxonomy>
</View>"""


# --- parsing ------------------------------------------------------------------------------------
def _config_error(what: str, *, why: str | None = None, fix: str) -> LabelConfigError:
    return LabelConfigError(what, why=why, fix=f"{fix}. Example:\n{EXAMPLE_CONFIG}")


def _number(
    attrs: Mapping[str, str], name: str, where: str, ok: Callable[[float], bool], why: str, fix: str
) -> float | None:
    """A numeric attribute, None when absent; a clear error when it is not a number ``ok`` accepts."""
    raw = attrs.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not ok(value):
        raise _config_error(f'{where} has {name}="{raw}"', why=why, fix=fix)
    return value


def _float_knob(attrs: Mapping[str, str], where: str) -> float | None:
    return _number(
        attrs,
        KNOB_THRESHOLD,
        where,
        lambda v: 0.0 <= v <= 1.0,
        why="a threshold is a score between 0 and 1",
        fix=f'write e.g. {KNOB_THRESHOLD}="0.4"',
    )


def _cost_knob(attrs: Mapping[str, str], name: str, where: str) -> float | None:
    return _number(
        attrs,
        name,
        where,
        lambda v: 0.0 < v < math.inf,
        why="an edit cost is a positive number; only the add/remove ratio decides what is shown",
        fix=f'write e.g. {KNOB_COST_ADD}="2" {KNOB_COST_REMOVE}="1" (tags shown from p = 1/3)',
    )


def _int_attr(attrs: Mapping[str, str], name: str, where: str) -> int | None:
    raw = attrs.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit() or int(raw) < 1:
        raise _config_error(
            f'{where} has {name}="{raw}"', why="it must be a whole number ≥ 1", fix=f'write e.g. {name}="5"'
        )
    return int(raw)


def _knobs(attrs: Mapping[str, str], where: str) -> Knobs:
    skip_raw = attrs.get(KNOB_SKIP, "false").strip().lower()
    if skip_raw not in ("true", "false"):
        raise _config_error(
            f'{where} has {KNOB_SKIP}="{skip_raw}"', why='it must be "true" or "false"', fix=f'write {KNOB_SKIP}="true"'
        )
    return Knobs(
        threshold=_float_knob(attrs, where),
        max_tags=_int_attr(attrs, KNOB_MAX_TAGS, where),
        skip=skip_raw == "true",
        cost_add=_cost_knob(attrs, KNOB_COST_ADD, where),
        cost_remove=_cost_knob(attrs, KNOB_COST_REMOVE, where),
    )


def _output(choice: ET.Element) -> str | None:
    return choice.get("alias") or choice.get("value")


def model_label(text: str) -> str:
    """The model label a config value names: the value without surrounding whitespace.

    This is the one normalisation of the project: the workers' contract and the model's label set
    refuse labels with surrounding spaces, and Label Studio keeps ``value="dog "`` verbatim in its
    results. So the **output** string (what Label Studio stores, ``"dog "``) stays as written,
    and the **model label** (what the model scores and a round trains, ``"dog"``) is stripped.
    Inner spaces, slashes and non-ASCII text are kept as they are.
    """
    return text.strip()


def _model_labels(choice: ET.Element, default: str, where: str, skip: bool) -> tuple[str, ...]:
    """A choice's model labels: each name of ``predicted_values``, else ``default`` (normalised).

    Raises:
        LabelConfigError: The choice names no label (its value is blank and it has no
            ``predicted_values``) and its control is not skipped. The model could never score
            it, so ``/setup`` says so instead of leaving it out unseen.
    """
    raw = choice.get(PREDICTED_VALUES) or ""
    names = tuple(dict.fromkeys(model_label(n) for n in raw.split(",") if model_label(n)))
    if names:
        return names
    if not model_label(default):
        if skip:  # the model ignores the control anyway
            return ()
        raise _config_error(
            f"{where} has a <Choice> whose value {choice.get('value')!r} is blank",
            why="the model scores labels by their text, and a blank value names none",
            fix=f'give the choice a value, or {PREDICTED_VALUES}="name" for the model, '
            f'or add {KNOB_SKIP}="true" to the control',
        )
    return (model_label(default),)


def _choices_targets(element: ET.Element, where: str, skip: bool) -> tuple[Target, ...]:
    targets: dict[str, Target] = {}
    # iter() also finds choices wrapped in <View> inside <Choices>, which Label Studio allows.
    for choice in element.iter("Choice"):
        output = _output(choice)
        if output is None or output in targets:
            continue
        model_labels = _model_labels(choice, choice.get("value") or output, where, skip)
        if not model_labels:  # a blank choice of a skipped control
            continue
        targets[output] = Target(
            path=(output,),
            model_labels=model_labels,
            threshold=_float_knob(choice.attrib, f"{where} <Choice value={output!r}>"),
        )
    return tuple(targets.values())


def _taxonomy_nodes(element: ET.Element, prefix: tuple[ET.Element, ...] = ()) -> Iterator[tuple[ET.Element, ...]]:
    for child in element:
        if child.tag == "Choice" and _output(child) is not None:
            yield (*prefix, child)
            yield from _taxonomy_nodes(child, (*prefix, child))


def _node_name(node: ET.Element) -> str:
    return model_label(node.get("value") or _output(node) or "")


def _taxonomy_targets(element: ET.Element, where: str, skip: bool) -> tuple[Target, ...]:
    leafs_only = element.get("leafsOnly", "false").lower() == "true"
    nodes = list(_taxonomy_nodes(element))
    # A node name used twice (e.g. "Other" under two parents, or "dog" and "dog ") would make one
    # model label select two paths: those nodes get their path as the model label instead.
    names = Counter(_node_name(node[-1]) for node in nodes)
    targets: dict[str, Target] = {}
    for node in nodes:
        leaf = node[-1]
        if leafs_only and any(child.tag == "Choice" for child in leaf):
            continue
        path = tuple(_output(n) or "" for n in node)
        name = _node_name(leaf)
        default = name if names[name] == 1 else PATH_SEPARATOR.join(_node_name(n) for n in node)
        model_labels = _model_labels(leaf, default, where, skip)
        if not model_labels:  # a blank node of a skipped control
            continue
        target = Target(
            path=path,
            model_labels=model_labels,
            threshold=_float_knob(leaf.attrib, f"{where} <Choice value={path[-1]!r}>"),
        )
        other = targets.setdefault(target.key, target)
        if other is not target and other.path != target.path:
            raise _config_error(
                f"{where} has two nodes that Label Studio's paths cannot tell apart: "
                f"{list(other.path)} and {list(target.path)}",
                why=f'a path is kept as its nodes joined by "{PATH_SEPARATOR}", and these join to the same text',
                fix=f'rename one of them so that no node value contains "{PATH_SEPARATOR}"',
            )
    return tuple(targets.values())


def _build_choices(name: str, to_name: str, value_key: str, element: ET.Element) -> TagControl:
    where = f'<Choices name="{name}">'
    knobs = _knobs(element.attrib, where)
    return ChoicesControl(
        name=name,
        to_name=to_name,
        value_key=value_key,
        targets=_choices_targets(element, where, knobs.skip),
        knobs=knobs,
        multiple=element.get("choice", "single") == "multiple",
    )


def _build_taxonomy(name: str, to_name: str, value_key: str, element: ET.Element) -> TagControl:
    where = f'<Taxonomy name="{name}">'
    knobs = _knobs(element.attrib, where)
    max_usages = _int_attr(element.attrib, "maxUsages", where)
    if max_usages is not None and max_usages > 1:
        # Label Studio refuses more selections than maxUsages: cap the model's selection too.
        knobs = replace(knobs, max_tags=min(knobs.max_tags or max_usages, max_usages))
    return TaxonomyControl(
        name=name,
        to_name=to_name,
        value_key=value_key,
        targets=_taxonomy_targets(element, where, knobs.skip),
        knobs=knobs,
        multiple=max_usages != 1,
    )


# The strategies, by control tag (the yolo example's `available_model_classes`).
_BUILDERS: dict[str, Callable[[str, str, str, ET.Element], TagControl]] = {
    ChoicesControl.tag: _build_choices,
    TaxonomyControl.tag: _build_taxonomy,
}


def _image_value_keys(li: Any) -> dict[str, str]:
    keys: dict[str, str] = {}
    for obj in li.objects or []:
        if str(obj.tag).lower() != "image":
            continue
        value = obj.attr.get("value") or ""
        if not value.startswith("$") or len(value) < 2:
            raise _config_error(
                f'<Image name="{obj.name}"> has value="{value}"'
                + (f' and valueList="{obj.attr["valueList"]}"' if "valueList" in obj.attr else ""),
                why="the backend reads one image URL per task from a task data key",
                fix='point the image at a task data key, e.g. value="$image"',
            )
        keys[obj.name] = value[1:]
    return keys


def _parse(config: str) -> tuple[Any, ET.Element]:
    if not config or not config.strip():
        raise _config_error("the labeling config is empty", fix="send the project's labeling config")
    try:
        li = LabelInterface(config)
        # A second, stdlib parse for the choice tree: LabelInterface flattens Taxonomy nesting.
        root = ET.fromstring(config)  # nosec B314 - same text LabelInterface just accepted
    except Exception as exc:  # the SDK raises bare Exception subclasses for every XML problem
        raise _config_error("the labeling config is not valid XML", why=str(exc), fix="fix the XML") from exc
    return li, root


def parse_label_config(config: str) -> ProjectVocabulary:
    """Find the image-tagging controls of a labeling config and build the vocabulary.

    The last :data:`PARSED_CONFIGS_KEPT` vocabularies are kept by config text: Label Studio sends
    the config with every ``/setup`` and ``/predict``, and a 10,000-choice config (290 kB) takes
    0.3 s of CPU to parse. A vocabulary is immutable, so callers may share it.

    Args:
        config: The labeling config XML (``/setup``'s ``schema``, ``/predict``'s ``label_config``).

    Returns:
        The controls and the ordered union of their model labels.

    Raises:
        LabelConfigError: Broken XML, no ``<Image>``, no ``Choices``/``Taxonomy`` on an image,
            a ``toName`` naming no tag, a bad knob, or an empty vocabulary; the message says what
            failed, why, and the fix, with an example config.
    """
    return _parse_vocabulary(config)


# Configs are per project; 16 covers the projects one backend serves at a time. Errors are not
# cached (lru_cache keeps results only), so a fixed config is read afresh.
PARSED_CONFIGS_KEPT = 16


@functools.lru_cache(maxsize=PARSED_CONFIGS_KEPT)
def _parse_vocabulary(config: str) -> ProjectVocabulary:
    li, root = _parse(config)
    images = _image_value_keys(li)
    if not images:
        raise _config_error("the labeling config has no <Image> object", fix='add <Image name="image" value="$image"/>')
    known = {obj.name for obj in li.objects or []}
    controls: list[TagControl] = []
    for control in li.controls or []:
        build = _BUILDERS.get(control.tag)
        if build is None:
            continue
        unknown = [n for n in control.to_name if n not in known]
        if unknown:
            raise _config_error(
                f'<{control.tag} name="{control.name}"> has toName="{",".join(control.to_name)}", '
                f"but no object tag is called {', '.join(map(repr, unknown))}",
                why=f"the object tags are {sorted(known)}",
                fix="make toName the name of an <Image>",
            )
        image = next((n for n in control.to_name if n in images), None)
        if image is None:
            continue  # a Choices on a Text or Audio object: not ours
        element = next(e for e in root.iter(control.tag) if e.get("name") == control.name)
        controls.append(build(control.name, image, images[image], element))
    return _vocabulary(controls)


def _vocabulary(controls: list[TagControl]) -> ProjectVocabulary:
    if not controls:
        raise _config_error(
            "the labeling config has no <Choices> or <Taxonomy> attached to an <Image>",
            why="the backend predicts image-level tags only",
            fix='add <Choices name="tags" toName="image" choice="multiple"> with <Choice> children',
        )
    for control in controls:
        if not control.knobs.skip and not control.targets:
            raise _config_error(
                f'<{control.tag} name="{control.name}"> has no <Choice> the model can predict',
                why='its options are empty or loaded from task data (value="$..."), which the backend cannot see',
                fix=f'list the options as <Choice value="..."/> children, or add {KNOB_SKIP}="true" to the control',
            )
    labels = tuple(dict.fromkeys(label for c in controls if not c.knobs.skip for label in c.model_labels))
    if len(labels) > MAX_LABELS:
        raise _config_error(
            f"the labeling config names {len(labels):,} model labels",
            why=f"a prediction request carries at most {MAX_LABELS:,} (state.contracts.MAX_LABELS)",
            fix=f'split the options over several projects, or add {KNOB_SKIP}="true" to the controls the model '
            "need not predict",
        )
    if not labels:
        raise _config_error(
            "the labeling config leaves the model no label to predict",
            why=f'every image-tagging control has {KNOB_SKIP}="true"',
            fix=f"remove {KNOB_SKIP} from at least one control",
        )
    logger.debug("vocabulary: %d controls, %d labels", len(controls), len(labels))
    return ProjectVocabulary(controls=tuple(controls), labels=labels)
