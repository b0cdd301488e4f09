"""Property-based tests (hypothesis) of the backend's pure converters and wire/config parsing.

What every property proves, whatever the generated input:

- ``parse_label_config`` returns a vocabulary or raises :class:`LabelConfigError`, never anything
  else, on random text and on random trees of Label Studio tags; a vocabulary it returns is one a
  worker accepts unchanged (``PredictRequest.labels == vocab.labels``) and is internally
  consistent (labels unique, the ordered union of the active controls' model labels, the
  fingerprint of those labels).
- ``result_value`` and ``keys_from_value`` are inverse; ``prune``/``implied_keys`` are idempotent.
- ``task_image_refs``/``build_predict_requests``: arbitrary task data gives image references or a
  :class:`TaskDataError` (``missing_data``/``bad_data``); each task is either failed or fully
  sent, in task order, in chunks of at most ``chunk_size``.
- ``predictions_from_results``: one entry per task, in task order, whatever the scores; scores in
  [0, 1]; selections obey thresholds and caps; the answer does not depend on the chunking; LS's own
  validator accepts it; wrong worker answers raise only :class:`WorkerResultError`.
- Round trips: prediction → JSON → prediction; prediction accepted as an annotation → a correction
  with exactly the predicted keys as positives; prediction fully removed → those keys as negatives.
- ``parse_project_id`` and the request models: any JSON gives a value or ``ValueError`` /
  ``ValidationError``; the webhook event's derived properties never raise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from label_studio_sdk.label_interface.interface import LabelInterface
from pydantic import ValidationError

from backends.convert import (
    MAX_SCORES_KEPT,
    SCORES_KEY,
    build_predict_requests,
    confidence,
    predictions_from_results,
    task_image_refs,
)
from backends.errors import TaskDataError, WorkerResultError
from state.contracts import (
    ImageFailure,
    ImageRef,
    ImageScores,
    PredictRequest,
    PredictResult,
    vocabulary_fingerprint,
)
from studio.config import parse_label_config
from studio.controls import ChoicesControl, ProjectVocabulary, TaxonomyControl
from studio.errors import LabelConfigError
from studio.protocol import (
    MAX_ID,
    Annotation,
    LSPredictRequest,
    LSPredictResponse,
    Prediction,
    SetupRequest,
    Task,
    WebhookEvent,
    parse_project_id,
)
from studio.results import annotation_to_correction

VERSION = "prop-v1"
# Bounded so that the module runs in seconds on 2 shared cores; CI may raise them with a profile.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ------------------------------------------------------------------------------------
# Characters an XML attribute can carry (no control characters, surrogates or non-characters).
XML_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn"))
names = st.text(st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")), min_size=1, max_size=6)
# Label text, biased towards collisions and stray spaces: " cat" and "cat" in one config.
words = st.one_of(
    st.sampled_from(["cat", "dog", " cat", "cat ", "Dog", "a,b", "  ", "x / y", "$img", "Ünïcode", "&<>\"'"]),
    st.text(XML_CHARS, min_size=1, max_size=8),
)
good_thresholds = st.floats(0, 1).map(lambda f: f"{f:.3g}")
good_max_tags = st.integers(1, 5).map(str)
# Knob values including broken ones, for the "clear error, never a crash" properties.
any_thresholds = good_thresholds | st.sampled_from(["-0.1", "1.5", "abc", "nan", ""])
any_max_tags = good_max_tags | st.sampled_from(["0", "-1", "x", " 2 "])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _attrs(attrs: dict[str, str | None]) -> str:
    return "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items() if v is not None)


@st.composite
def choice_xml(draw: st.DrawFn, depth: int, valid: bool) -> str:
    """One ``<Choice>`` (with a subtree when ``depth`` > 0: taxonomy nodes)."""
    thresholds = good_thresholds if valid else any_thresholds
    attrs = {
        "value": draw(words),
        "alias": draw(st.none() | words),
        "predicted_values": draw(st.none() | st.lists(words, max_size=3).map(",".join)),
        "model_threshold": draw(st.none() | thresholds),
    }
    children = draw(st.lists(choice_xml(depth - 1, valid), max_size=3)) if depth > 0 else []
    return f"<Choice{_attrs(attrs)}>{''.join(children)}</Choice>" if children else f"<Choice{_attrs(attrs)}/>"


@st.composite
def control_xml(draw: st.DrawFn, name: str, images: Sequence[str], valid: bool) -> str:
    """A ``<Choices>`` or ``<Taxonomy>`` on one of ``images``, with random knobs (valid ones when ``valid``)."""
    tag = draw(st.sampled_from(["Choices", "Taxonomy"]))
    attrs: dict[str, str | None] = {
        "name": name,
        "toName": draw(st.sampled_from(images)),
        "model_threshold": draw(st.none() | (good_thresholds if valid else any_thresholds)),
        "model_max_tags": draw(st.none() | (good_max_tags if valid else any_max_tags)),
        "model_skip": draw(st.sampled_from([None, None, None, "true", "false", *([] if valid else ["maybe"])])),
    }
    least = 1 if valid else 0
    if tag == "Choices":
        attrs["choice"] = draw(st.sampled_from([None, "single", "single-radio", "multiple"]))
        children = draw(st.lists(choice_xml(0, valid), min_size=least, max_size=6))
    else:
        attrs["leafsOnly"] = draw(st.sampled_from([None, "true", "false"]))
        attrs["maxUsages"] = draw(st.sampled_from([None, "1", "2", *([] if valid else ["0"])]))
        children = draw(st.lists(choice_xml(2, valid), min_size=least, max_size=4))
    return f"<{tag}{_attrs(attrs)}>{''.join(children)}</{tag}>"


@st.composite
def label_configs(draw: st.DrawFn, valid: bool = False) -> str:
    """A labeling config of 1-2 images and 1-3 image-tagging controls (knobs in range when ``valid``)."""
    images = [f"img{i}" for i in range(draw(st.integers(1, 2)))]
    keys = draw(st.lists(names, min_size=len(images), max_size=len(images)))
    objects = "".join(f'<Image name="{n}" value="${k}"/>' for n, k in zip(images, keys, strict=True))
    controls = [draw(control_xml(f"c{i}", images, valid)) for i in range(draw(st.integers(1, 3)))]
    extra = draw(st.sampled_from(["", '<Text name="txt" value="$text"/>', '<TextArea name="n" toName="img0"/>']))
    return f"<View>{objects}{extra}{''.join(controls)}</View>"


@st.composite
def vocabularies(draw: st.DrawFn) -> tuple[str, ProjectVocabulary]:
    """A config that parses, and its vocabulary."""
    xml = draw(label_configs(valid=True))
    try:
        return xml, parse_label_config(xml)
    except LabelConfigError:
        assume(False)
        raise  # unreachable: assume(False) raises


def task_data(keys: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Task data: mostly usable image URLs, else missing keys, blanks, non-strings, huge strings."""
    value = st.one_of(
        st.builds(lambda n: f"/data/upload/1/{n}.jpg", st.integers(0, 99)),
        st.builds(lambda n: f"http://127.0.0.1:8080/img/{n}.png", st.integers(0, 99)),
        st.sampled_from(["", "   ", "data:image/png;base64," + "A" * 9000, "s3://bucket/a.jpg"]),
        JSON,
    )
    return st.fixed_dictionaries({}, optional={**dict.fromkeys(keys, value), "extra": JSON})


@st.composite
def task_lists(draw: st.DrawFn, vocab: ProjectVocabulary, max_size: int = 8) -> list[Task]:
    """Tasks with unique ids (in random order) and arbitrary data for the vocabulary's image keys."""
    ids = draw(st.lists(st.integers(1, 10**9), unique=True, max_size=max_size))
    return [Task(id=i, data=draw(task_data(vocab.value_keys)), project=1) for i in ids]


scores_01 = st.floats(0, 1, allow_nan=False)


@st.composite
def worker_answers(draw: st.DrawFn, vocab: ProjectVocabulary, requests: Sequence[PredictRequest]) -> dict[str, Any]:
    """What the workers say: per-label thresholds and seen marks, per-image scores or failures."""
    n = len(vocab.labels)
    keys = [ref.key for r in requests for ref in r.images]
    return {
        "thresholds": draw(st.lists(scores_01, min_size=n, max_size=n)),
        "seen": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        "scores": {k: draw(st.lists(scores_01, min_size=n, max_size=n)) for k in keys},
        "failed": draw(st.sets(st.sampled_from(keys))) if keys else set(),
    }


def answer(request: PredictRequest, said: dict[str, Any]) -> PredictResult:
    """A worker's :class:`PredictResult` for one request, from :func:`worker_answers`."""
    items = [
        ImageScores(key=r.key, task_id=r.task_id, error=ImageFailure(reason="not_found", message="gone"))
        if r.key in said["failed"]
        else ImageScores(key=r.key, task_id=r.task_id, scores=said["scores"][r.key])
        for r in request.images
    ]
    return PredictResult(
        model_version=VERSION,
        labels=list(request.labels),
        seen=said["seen"],
        thresholds=said["thresholds"],
        items=items,
    )


# --- labeling configs ------------------------------------------------------------------------------
@FAST
@given(st.text(XML_CHARS, max_size=200) | st.text(max_size=50))
def test_any_text_is_a_vocabulary_or_a_label_config_error(text: str) -> None:
    try:
        parse_label_config(text)
    except LabelConfigError as exc:
        assert exc.status_code == 422 and "Fix:" in exc.message


@FAST
@given(label_configs())
def test_random_configs_parse_to_a_consistent_vocabulary_or_a_clear_error(xml: str) -> None:
    try:
        vocab = parse_label_config(xml)
    except LabelConfigError as exc:
        assert "Fix:" in exc.message and "Example:" in exc.message
        return
    assert vocab.labels and len(set(vocab.labels)) == len(vocab.labels)
    assert all(label == label.strip() and label for label in vocab.labels)
    assert vocab.labels == tuple(dict.fromkeys(lb for c in vocab.active for lb in c.model_labels))
    assert vocab.fingerprint == vocabulary_fingerprint(list(vocab.labels))
    # The vocabulary is one a worker takes unchanged (it strips and refuses duplicates).
    request = PredictRequest(labels=list(vocab.labels), images=[ImageRef(key="1", url="/x.jpg")])
    assert request.labels == list(vocab.labels)
    for control in vocab.controls:
        assert isinstance(control, ChoicesControl | TaxonomyControl)
        assert len({t.key for t in control.targets}) == len(control.targets)
        assert all(t.model_labels for t in control.targets)
        assert control.max_tags is None or control.max_tags >= 1
        threshold = control.knobs.threshold
        assert threshold is None or 0.0 <= threshold <= 1.0
        assert vocab.control(control.name) is control


@FAST
@given(vocabularies(), st.data())
def test_result_values_round_trip_through_keys(config: tuple[str, ProjectVocabulary], data: st.DataObject) -> None:
    _, vocab = config
    for control in vocab.controls:
        chosen = data.draw(st.lists(st.sampled_from(control.targets), unique=True) if control.targets else st.just([]))
        value = json.loads(json.dumps(control.result_value(chosen)))  # through the wire
        assert control.keys_from_value(value) == [t.key for t in chosen]
        assert control.prune(control.prune(chosen)) == control.prune(chosen)
        keys = [t.key for t in chosen]
        implied = control.implied_keys(keys)
        assert control.implied_keys(implied) == implied and set(keys) <= set(implied)
        for target in chosen:
            assert control.target(target.key) == target


# --- tasks → requests ------------------------------------------------------------------------------
@FAST
@given(vocabularies(), st.data())
def test_task_data_gives_refs_or_a_task_data_error(config: tuple[str, ProjectVocabulary], data: st.DataObject) -> None:
    _, vocab = config
    task = Task(id=data.draw(st.integers(0, 10**12)), data=data.draw(task_data(vocab.value_keys)))
    try:
        refs = task_image_refs(vocab, task)
    except TaskDataError as exc:
        assert exc.task_id == task.id and exc.reason in {"missing_data", "bad_data"} and "Fix:" in exc.message
        return
    assert len(refs) == len(vocab.value_keys)
    assert all(r.task_id == task.id and r.key.split(":")[0] == str(task.id) for r in refs)
    assert [r.url for r in refs] == [task.data[k].strip() for k in vocab.value_keys]


@FAST
@given(vocabularies(), st.data(), st.integers(1, 5))
def test_requests_keep_task_order_and_chunk_bounds(
    config: tuple[str, ProjectVocabulary], data: st.DataObject, chunk_size: int
) -> None:
    _, vocab = config
    tasks = data.draw(task_lists(vocab))
    requests, failures = build_predict_requests(vocab, tasks, project=1, chunk_size=chunk_size)
    failed = {f.task_id for f in failures}
    sent = [ref for r in requests for ref in r.images]
    assert all(1 <= len(r.images) <= chunk_size and r.labels == list(vocab.labels) for r in requests)
    assert [f.task_id for f in failures] == [t.id for t in tasks if t.id in failed]
    assert [ref.task_id for ref in sent] == [t.id for t in tasks if t.id not in failed for _ in vocab.value_keys]
    assert len({ref.key for ref in sent}) == len(sent)


# --- worker results → predictions ------------------------------------------------------------------
def _check_batch(vocab: ProjectVocabulary, tasks: Sequence[Task], said: dict[str, Any], batch: Any) -> None:
    assert len(batch.predictions) == len(tasks) == len(batch.ls_results())
    failed = {f.task_id for f in batch.failures}
    assert len(failed) == len(batch.failures)
    for task, prediction, result in zip(tasks, batch.predictions, batch.ls_results(), strict=True):
        assert (prediction is None) == (task.id in failed) == (result == [])
        if prediction is None:
            continue
        assert prediction.model_version == vocab.model_version(VERSION)
        assert prediction.score is not None and 0.0 <= prediction.score <= 1.0
        assert len({item.from_name for item in prediction.result}) == len(prediction.result)
        for item in prediction.result:
            control = vocab.control(item.from_name)
            assert item.score is not None and 0.0 <= item.score <= 1.0
            keys = control.keys_from_value(item.value)
            assert len(set(keys)) == len(keys)
            assert control.max_tags is None or len(keys) <= control.max_tags
            extras = item.assistant or {}
            assert set(extras) == {"scores", "thresholds", "novel"} | (set() if keys else {"note"})
            assert len(extras["scores"]) <= MAX_SCORES_KEPT and set(extras["novel"]) <= set(extras["scores"])
            for key in keys:  # every selected tag passed its threshold (4-decimal rounding)
                assert extras["scores"][key] >= extras["thresholds"][key] - 1e-4
        assert json.loads(json.dumps(result)) == result


@SLOW
@given(vocabularies(), st.data())
def test_predictions_keep_task_order_length_and_ranges(
    config: tuple[str, ProjectVocabulary], data: st.DataObject
) -> None:
    xml, vocab = config
    tasks = data.draw(task_lists(vocab))
    requests, failures = build_predict_requests(vocab, tasks, project=1, chunk_size=3)
    said = data.draw(worker_answers(vocab, requests))
    batch = predictions_from_results(vocab, tasks, [answer(r, said) for r in requests], failures)
    _check_batch(vocab, tasks, said, batch)
    # Label Studio's own validator accepts every prediction.
    interface = LabelInterface(xml)
    for prediction in batch.predictions:
        if prediction is not None:
            dumped = prediction.model_dump(exclude_none=True)
            assert interface.validate_prediction(dumped, return_errors=True) == [], dumped  # type: ignore[no-untyped-call]
    # The /predict answer parses back into the wire model with one entry per task.
    assert len(LSPredictResponse.model_validate({"results": batch.ls_results()}).results) == len(tasks)


@SLOW
@given(vocabularies(), st.data(), st.integers(1, 4), st.randoms(use_true_random=False))
def test_predictions_do_not_depend_on_chunking_or_order(
    config: tuple[str, ProjectVocabulary], data: st.DataObject, chunk_size: int, rng: Any
) -> None:
    _, vocab = config
    tasks = data.draw(task_lists(vocab))
    requests, failures = build_predict_requests(vocab, tasks, chunk_size=1024)
    said = data.draw(worker_answers(vocab, requests))
    whole = predictions_from_results(vocab, tasks, [answer(r, said) for r in requests], failures)

    chunked, chunk_failures = build_predict_requests(vocab, tasks, chunk_size=chunk_size)
    again = predictions_from_results(vocab, tasks, [answer(r, said) for r in chunked], chunk_failures)
    assert again == whole

    shuffled = list(tasks)
    rng.shuffle(shuffled)
    moved = predictions_from_results(vocab, shuffled, [answer(r, said) for r in requests], failures)
    by_id = dict(zip([t.id for t in tasks], whole.predictions, strict=True))
    assert list(moved.predictions) == [by_id[t.id] for t in shuffled]


@FAST
@given(
    vocabularies(),
    st.data(),
    st.one_of(st.floats(), st.floats(-5, 5)),
    st.sampled_from(["scores", "labels", "thresholds", "nonfinite", "ok"]),
)
def test_any_worker_numbers_give_scores_in_range_or_a_worker_result_error(
    config: tuple[str, ProjectVocabulary], data: st.DataObject, odd: float, broken: str
) -> None:
    _, vocab = config
    tasks = [Task(id=1, data={k: f"/data/{k}.jpg" for k in vocab.value_keys})]
    (request,), _ = build_predict_requests(vocab, tasks)
    n = len(vocab.labels)
    numbers = data.draw(st.lists(st.floats(-3, 3) | st.just(odd), min_size=n, max_size=n))
    finite = [x if math.isfinite(x) else 0.5 for x in numbers]
    scores = {"scores": finite[:-1], "nonfinite": [math.nan, *finite[1:]]}.get(broken, numbers)
    result = PredictResult(
        model_version=VERSION,
        labels=list(request.labels) + (["extra"] if broken == "labels" else []),
        seen=[True] * (n + (broken == "labels")),
        thresholds=data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n))
        + ([0.5] * (broken in ("labels", "thresholds"))),
        items=[ImageScores(key=ref.key, task_id=1, scores=scores) for ref in request.images],
    )
    expect_error = broken != "ok" or not all(math.isfinite(x) for x in numbers)
    try:
        batch = predictions_from_results(vocab, tasks, [result])
    except WorkerResultError as exc:
        assert expect_error and exc.status_code == 502
        return
    assert not expect_error
    (prediction,) = batch.predictions
    assert prediction is not None and prediction.score is not None and 0.0 <= prediction.score <= 1.0
    assert all(item.score is not None and 0.0 <= item.score <= 1.0 for item in prediction.result)


@FAST
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1))), st.integers(1, 5))
def test_confidence_is_in_the_unit_interval(pairs: list[tuple[float, float]], top_k: int) -> None:
    scores, limits = [s for s, _ in pairs], [t for _, t in pairs]
    value = confidence(scores, limits, top_k)
    assert 0.0 <= value <= 1.0
    if all(s in (0.0, 1.0) and 0.0 < t < 1.0 for s, t in pairs):
        assert value == pytest.approx(1.0)  # certain everywhere
    with pytest.raises(ValueError, match="thresholds"):
        confidence([*scores, 0.5], limits)


# --- round trips -----------------------------------------------------------------------------------
@SLOW
@given(vocabularies(), st.data(), st.integers(1, 10**6))
def test_predictions_round_trip_through_json_and_annotations(
    config: tuple[str, ProjectVocabulary], data: st.DataObject, prediction_id: int
) -> None:
    _, vocab = config
    tasks = [Task(id=7, data={k: f"/data/upload/{k}.jpg" for k in vocab.value_keys})]
    requests, failures = build_predict_requests(vocab, tasks)
    said = data.draw(worker_answers(vocab, requests))
    said["failed"] = set()
    (prediction,) = predictions_from_results(vocab, tasks, [answer(r, said) for r in requests], failures).predictions
    assert prediction is not None
    stored = Prediction.model_validate(prediction.model_dump(mode="json", exclude_none=True) | {"id": prediction_id})
    assert stored.model_copy(update={"id": None}) == prediction
    assert all(SCORES_KEY in item.model_dump(exclude_none=True) for item in stored.result)

    # Accepting the prediction as it is: every selected key is a positive, nothing is a negative.
    accepted = Annotation(id=1, task=7, result=stored.result, parent_prediction=prediction_id)
    correction = annotation_to_correction(vocab, accepted, stored)
    predicted = {i.from_name: vocab.control(i.from_name).keys_from_value(i.value) for i in stored.result}
    got = {c.control: c for c in correction.controls}
    assert set(got) == set(predicted)
    for name, keys in predicted.items():
        assert got[name].positives == tuple(vocab.control(name).implied_keys(keys))
        assert got[name].negatives == () and got[name].unknown == ()

    # Removing everything: the predicted keys come back as hard negatives.
    removed = Annotation(id=2, task=7, result=[], parent_prediction=prediction_id)
    negatives = annotation_to_correction(vocab, removed, stored)
    assert {c.control: list(c.negatives) for c in negatives.controls} == {
        n: list(dict.fromkeys(k)) for n, k in predicted.items()
    }


# --- wire models -----------------------------------------------------------------------------------
@FAST
@given(st.integers(0, MAX_ID), st.integers(0, 10**10))
def test_project_references_round_trip(project: int, created: int) -> None:
    for ref in (project, str(project), f"{project}.{created}", {"id": project, "title": "x"}, f" {project} "):
        assert parse_project_id(ref) == project
    assert parse_project_id(None) is None and parse_project_id("") is None


@FAST
@given(st.integers(max_value=-1) | st.integers(min_value=MAX_ID + 1))
def test_out_of_range_ids_are_refused(bad: int) -> None:
    for ref in (bad, str(bad), f"{bad}.17", {"id": bad}):
        with pytest.raises(ValueError, match="project"):
            parse_project_id(ref)
    with pytest.raises(ValidationError):
        Task.model_validate({"id": bad, "data": {}})
    with pytest.raises(ValidationError):
        WebhookEvent.model_validate({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": bad}]})


@FAST
@given(JSON)
def test_any_project_reference_is_an_id_none_or_a_value_error(value: Any) -> None:
    try:
        parsed = parse_project_id(value)
    except ValueError:
        return
    assert parsed is None or (type(parsed) is int and 0 <= parsed <= MAX_ID)


def test_deeply_nested_project_references_are_refused_not_a_crash() -> None:
    nested: Any = 3
    for _ in range(5_000):
        nested = {"id": nested}
    with pytest.raises(ValueError, match="project"):
        parse_project_id(nested)
    with pytest.raises(ValidationError):
        SetupRequest.model_validate({"project": nested, "schema": "<View/>"})


@FAST
@given(st.dictionaries(st.sampled_from(["tasks", "project", "label_config", "params", "model_version"]), JSON) | JSON)
def test_any_predict_body_is_a_request_or_a_validation_error(body: Any) -> None:
    try:
        request = LSPredictRequest.model_validate(body)
    except ValidationError:
        return
    assert all(isinstance(t.id, int) for t in request.tasks)


@FAST
@given(
    st.fixed_dictionaries(
        {"action": st.sampled_from(["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "X"])},
        optional={"project": JSON, "annotation": JSON, "annotations": JSON, "task": JSON},
    )
    | JSON
)
def test_any_webhook_body_is_an_event_or_a_validation_error(body: Any) -> None:
    try:
        event = WebhookEvent.model_validate(body)
    except ValidationError:
        return
    assert event.kind in {"annotation", "delete", "train", "other"}
    assert event.project_id is None or isinstance(event.project_id, int)
    assert isinstance(event.annotation_list, list) and isinstance(event.deleted_ids, list)
