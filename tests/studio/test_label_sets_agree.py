"""Prediction and rounds agree on the label set, for any labeling config (issue 16, fault 6a).

A project whose config had ``<Choice value="dog "/>`` got predictions, but every round failed days
later ("label names must not have leading or trailing spaces"): the backend and the rounds parsed
the config twice, with different rules. Now both use :func:`studio.config.parse_label_config`; this
module checks the property end to end, over generated configs with surrounding whitespace,
slashes, non-ASCII text, repeated values, nested taxonomies, several tag controls, skipped
controls and extra controls the model ignores (``TextArea``, ``Rating``, ``Choices`` on text):

- **the same label set or the same clear error**: the labels a worker receives from the backend
  (``PredictRequest.labels`` after the workers' contract) equal the names of the ``LabelSet`` a
  round trains (:func:`workers.round_data.round_labels`), or both sides refuse the config with a
  :class:`~studio.errors.LabelConfigError` (422 at ``/setup``, with the fix);
- **annotations map back into that set**: a prediction the annotator accepts, read back from an
  export the way a round reads it, gives positives inside the label set and no hard negative,
  and the round's target matrix builds (``correction_targets``).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from assistant.corrections import correction_targets
from backends.convert import build_predict_requests, predictions_from_results
from state.contracts import ImageScores, PredictResult
from studio.config import parse_label_config
from studio.controls import ProjectVocabulary
from studio.errors import LabelConfigError
from studio.protocol import Task
from workers.round_data import exported_tasks, round_labels

# Hundreds of configs: each costs a few milliseconds (two parses, one prediction, one export read).
MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters an XML attribute can carry (no control characters, surrogates or non-characters).
XML_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn"))
# Values biased towards the hard cases: spaces around and inside, slashes (the taxonomy path
# separator is " / "), non-ASCII, blanks, commas (predicted_values separators), XML specials;
# drawn from a small pool so that repeats within one control are common.
ODD = [
    "dog", "dog ", " dog", "\tdog\t", "Dog", "cat", "hot dog", "a/b", "a / b", "x / y", "/", " / ",
    "猫", "café", "Ünïcode ", "  ", "", "a,b", "&<>\"'", "dog\u00a0",
]  # fmt: skip
values = st.sampled_from(ODD) | st.text(XML_CHARS, min_size=1, max_size=6)
EXTRAS = [
    '<TextArea name="note" toName="img0"/>',
    '<Rating name="rating" toName="img0" maxRating="5"/>',
    '<Text name="txt" value="$text"/><Choices name="sentiment" toName="txt"><Choice value="good "/></Choices>',
]


def _attrs(attrs: dict[str, str | None]) -> str:
    return "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items() if v is not None)


@st.composite
def choices(draw: st.DrawFn, depth: int) -> str:
    """A ``<Choice>``, with children down to ``depth`` (taxonomy nodes)."""
    attrs = {
        "value": draw(values),
        "alias": draw(st.none() | st.none() | values),
        "predicted_values": draw(st.none() | st.none() | st.lists(values, min_size=1, max_size=3).map(",".join)),
    }
    children = draw(st.lists(choices(depth - 1), max_size=3)) if depth > 0 else []
    return f"<Choice{_attrs(attrs)}>{''.join(children)}</Choice>" if children else f"<Choice{_attrs(attrs)}/>"


@st.composite
def controls(draw: st.DrawFn, name: str, images: list[str]) -> str:
    """A ``<Choices>`` or a nested ``<Taxonomy>`` on one of the images, sometimes skipped."""
    tag = draw(st.sampled_from(["Choices", "Taxonomy"]))
    attrs: dict[str, str | None] = {
        "name": name,
        "toName": draw(st.sampled_from(images)),
        "model_skip": draw(st.sampled_from([None, None, None, "true"])),
        "choice": "multiple" if tag == "Choices" else None,
        "leafsOnly": draw(st.sampled_from([None, "true"])) if tag == "Taxonomy" else None,
    }
    depth = 0 if tag == "Choices" else 3
    children = draw(st.lists(choices(depth), min_size=1, max_size=6 if tag == "Choices" else 3))
    return f"<{tag}{_attrs(attrs)}>{''.join(children)}</{tag}>"


@st.composite
def label_configs(draw: st.DrawFn) -> str:
    """1-2 images, 1-4 tag controls, and maybe controls the model ignores."""
    images = [f"img{i}" for i in range(draw(st.integers(1, 2)))]
    objects = "".join(f'<Image name="{n}" value="${n}_url"/>' for n in images)
    tags = [draw(controls(f"c{i}", images)) for i in range(draw(st.integers(1, 4)))]
    extras = draw(st.lists(st.sampled_from(EXTRAS), max_size=2, unique=True))
    return f"<View>{objects}{''.join(extras)}{''.join(tags)}</View>"


def _served(xml: str) -> tuple[ProjectVocabulary, list[str]] | LabelConfigError:
    """What prediction serves: the labels a worker receives for one task (after its contract)."""
    try:
        vocab = parse_label_config(xml)  # what /setup and /predict run
    except LabelConfigError as exc:
        return exc
    task = Task(id=1, project=1, data={key: f"/data/{key}.jpg" for key in vocab.value_keys})
    (request,), failures = build_predict_requests(vocab, [task], project=1)
    assert not failures
    return vocab, request.labels


def _worker_answer(vocab: ProjectVocabulary, labels: list[str]) -> PredictResult:
    """Every label scored high, so every target the caps allow is shown."""
    task = Task(id=1, project=1, data={key: f"/data/{key}.jpg" for key in vocab.value_keys})
    (request,), _ = build_predict_requests(vocab, [task], project=1)
    return PredictResult(
        model_version="prop-v1",
        labels=labels,
        seen=[True] * len(labels),
        thresholds=[0.5] * len(labels),
        items=[ImageScores(key=r.key, task_id=r.task_id, scores=[0.99] * len(labels)) for r in request.images],
    )


@MANY
@given(label_configs())
def test_prediction_serves_the_label_set_a_round_trains(xml: str) -> None:
    served = _served(xml)
    try:
        trained = round_labels(xml)
    except LabelConfigError as exc:
        # Both sides refuse it, with the same clear message (what, why, fix).
        assert isinstance(served, LabelConfigError), f"the round refused a config prediction serves: {exc}"
        assert exc.message == served.message and exc.status_code == 422 and "Fix:" in exc.message
        event("both refuse the config")
        return
    assert not isinstance(served, LabelConfigError), f"prediction refused a config a round trains: {served}"
    vocab, labels = served
    round_vocab, label_set = trained
    assert labels == list(label_set.names) == list(round_vocab.labels)
    assert all(label == label.strip() and label for label in labels)
    event("the same label set")

    # The annotator accepts the prediction as it is; the round reads it back from the export.
    batch = predictions_from_results(vocab, [Task(id=1, project=1)], [_worker_answer(vocab, labels)])
    (prediction,) = batch.predictions
    assert prediction is not None
    result = [item.model_dump(mode="json", exclude_none=True) for item in prediction.result]
    data = {key: f"/data/{key}.jpg" for key in vocab.value_keys}
    export = [{"id": 1, "data": data, "annotations": [{"id": 5, "result": result, "parent_prediction": 9}]}]
    (task,), skipped = exported_tasks(export, {9: {"id": 9, "result": result}}, round_vocab, {})
    assert skipped == {"unannotated_or_cancelled": 0, "no_image": 0}
    assert task.annotation.positives <= set(label_set.names)
    assert task.annotation.hard_negatives == frozenset()
    shown = {label for item in prediction.result for label in _labels_of(vocab, item.from_name, item.value)}
    assert shown <= task.annotation.positives
    targets = correction_targets(label_set, [task.annotation])
    assert targets.shape == (1, len(label_set))


def _labels_of(vocab: ProjectVocabulary, control_name: str, value: dict[str, object]) -> set[str]:
    """The model labels of the targets a result item selects that name exactly one label."""
    control = vocab.control(control_name)
    targets = {t.key: t for t in control.targets}
    keys = control.keys_from_value(value)
    return {targets[k].model_labels[0] for k in keys if k in targets and len(targets[k].model_labels) == 1}


def test_a_value_with_surrounding_spaces_is_served_and_trained_as_one_label() -> None:
    # The configuration of the fault as reported: predictions worked, every round failed.
    xml = (
        '<View><Image name="image" value="$image"/><Choices name="tags" toName="image" choice="multiple">'
        '<Choice value="dog "/><Choice value=" cat"/></Choices></View>'
    )
    served = _served(xml)
    assert not isinstance(served, LabelConfigError)
    _, label_set = round_labels(xml)
    assert served[1] == list(label_set.names) == ["dog", "cat"]
