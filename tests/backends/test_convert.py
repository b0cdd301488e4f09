"""Tasks → worker requests, worker results → LS predictions, annotations → corrections (no network)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from backends.convert import (
    DEFAULT_MAX_TAGS,
    EMPTY_NOTE,
    MAX_SCORES_KEPT,
    SCORES_KEY,
    PredictionBatch,
    TaskFailure,
    build_predict_requests,
    confidence,
    predictions_from_results,
    task_image_refs,
)
from backends.errors import TaskDataError, WorkerResultError
from state.contracts import ImageFailure, ImageRef, ImageScores, PredictRequest, PredictResult
from studio.config import parse_label_config
from studio.controls import ProjectVocabulary
from studio.errors import StudioError
from studio.protocol import Annotation, LSPredictRequest, Prediction, Task
from studio.results import annotation_to_correction
from tests.backends._fixtures import config, payload, prediction_errors

VERSION = "mkt-p1-r2"
Scores = Mapping[str, float] | Callable[[ImageRef], Mapping[str, float]]


def tasks_of(*data: dict[str, Any], first_id: int = 1) -> list[Task]:
    return [Task(id=first_id + i, data=d, project=1) for i, d in enumerate(data)]


def images(n: int, first_id: int = 1) -> list[Task]:
    return tasks_of(*({"image": f"/data/upload/1/{i}.jpg"} for i in range(n)), first_id=first_id)


def fake_worker(
    request: PredictRequest,
    scores: Scores,
    *,
    thresholds: Mapping[str, float] | None = None,
    unseen: frozenset[str] = frozenset(),
    failed: Mapping[str, str] | None = None,
    version: str = VERSION,
) -> PredictResult:
    """What a worker would answer: scores per label (0 when absent), thresholds 0.5 unless given."""
    items = []
    for ref in request.images:
        if failed and ref.key in failed:
            error = ImageFailure(reason=failed[ref.key], message=f"{ref.url}: {failed[ref.key]}")
            items.append(ImageScores(key=ref.key, task_id=ref.task_id, error=error))
            continue
        by_label = scores(ref) if callable(scores) else scores
        items.append(
            ImageScores(key=ref.key, task_id=ref.task_id, scores=[by_label.get(lb, 0.0) for lb in request.labels])
        )
    return PredictResult(
        model_version=version,
        labels=list(request.labels),
        seen=[label not in unseen for label in request.labels],
        thresholds=[(thresholds or {}).get(label, 0.5) for label in request.labels],
        items=items,
    )


def run(
    name: str, tasks: list[Task], scores: Scores, *, chunk_size: int = 1024, **worker: Any
) -> tuple[ProjectVocabulary, PredictionBatch]:
    """Config fixture → requests → fake worker → predictions."""
    vocab = parse_label_config(config(name))
    requests, failures = build_predict_requests(vocab, tasks, project=1, chunk_size=chunk_size)
    results = [fake_worker(req, scores, **worker) for req in requests]
    return vocab, predictions_from_results(vocab, tasks, results, failures)


def values(batch: PredictionBatch, task_index: int = 0) -> dict[str, Any]:
    """Control name → result value of one task's prediction."""
    pred = batch.predictions[task_index]
    assert pred is not None
    return {item.from_name: item.value for item in pred.result}


# --- tasks → image references --------------------------------------------------------------------
def test_image_refs_from_a_real_predict_call() -> None:
    body = LSPredictRequest.model_validate(payload("ls_predict"))
    vocab = parse_label_config(body.label_config or "")

    refs = [ref for task in body.tasks for ref in task_image_refs(vocab, task)]

    assert [(r.key, r.task_id) for r in refs] == [("1", 1), ("2", 2)]
    assert refs[0].url == body.tasks[0].data["image"]


@pytest.mark.parametrize(
    ("task_id", "reason"),
    [(11, "missing_data"), (12, "bad_data"), (13, "bad_data"), (14, "bad_data"), (15, "bad_data")],
)
def test_unusable_task_data_is_a_clear_per_task_error(task_id: int, reason: str) -> None:
    vocab = parse_label_config(config("multilabel"))
    (task,) = [Task.model_validate(t) for t in payload("tasks_bad_data") if t["id"] == task_id]

    with pytest.raises(TaskDataError) as info:
        task_image_refs(vocab, task)

    assert (info.value.task_id, info.value.reason) == (task_id, reason)
    assert f"Task {task_id}" in info.value.message and "Fix:" in info.value.message


def test_inline_data_uris_are_refused() -> None:
    vocab = parse_label_config(config("multilabel"))
    task = Task(id=5, data={"image": "data:image/jpeg;base64," + "A" * 9000})
    with pytest.raises(TaskDataError, match="8,192"):
        task_image_refs(vocab, task)


def test_build_requests_chunks_and_reports_bad_tasks() -> None:
    vocab = parse_label_config(config("multilabel"))
    tasks = [Task.model_validate(t) for t in payload("tasks_bad_data")]

    requests, failures = build_predict_requests(vocab, tasks, project=1, request_id="r1", chunk_size=1)

    assert [f.task_id for f in failures] == [11, 12, 13, 14, 15]
    assert [[i.task_id for i in r.images] for r in requests] == [[10], [16]]
    assert all(r.labels == list(vocab.labels) and r.project == 1 and r.request_id == "r1" for r in requests)


def test_two_images_per_task_get_distinct_keys() -> None:
    vocab = parse_label_config(config("two_images"))
    tasks = [Task.model_validate(t) for t in payload("tasks_two_images")]

    (request,), failures = build_predict_requests(vocab, tasks)

    assert not failures
    assert [i.key for i in request.images] == ["21:before", "21:after", "22:before", "22:after"]


# --- selection -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scores", "thresholds", "expected"),
    [
        # dog scores its best model label (puppy); outdoor misses its own <Choice model_threshold="0.7">.
        ({"cat": 0.9, "dog": 0.2, "puppy": 0.8, "Person": 0.6, "outdoor": 0.65}, {}, ["cat", "dog", "person"]),
        ({"cat": 0.6, "dog": 0.7, "Person": 0.8, "outdoor": 0.9}, {}, ["outdoor", "Person".lower(), "dog"]),  # top 3
        # The worker's F1-optimal threshold no longer decides: the break-even point (0.5) does.
        ({"cat": 0.9, "dog": 0.6}, {"cat": 0.95}, ["cat", "dog"]),
        ({"cat": 0.5}, {}, ["cat"]),  # a score equal to its threshold passes
        ({"cat": 0.1, "outdoor": 0.69}, {}, []),  # nothing passes: an empty item (with its scores)
    ],
)
def test_choices_selection(scores: dict[str, float], thresholds: dict[str, float], expected: list[str]) -> None:
    _, batch = run("multilabel", images(1), scores, thresholds=thresholds)
    assert values(batch).get("tags") == {"choices": expected}


def test_an_empty_prediction_keeps_its_scores_and_says_why() -> None:
    # "Why no tags?" must be answerable from the prediction: every score below its threshold.
    _, batch = run("multilabel", images(1), {"cat": 0.1, "outdoor": 0.69})
    pred = batch.predictions[0]
    assert pred is not None
    (item,) = [i for i in pred.result if i.from_name == "tags"]
    extras = item.assistant or {}
    assert item.value == {"choices": []}
    assert extras["note"] == EMPTY_NOTE
    assert extras["scores"]["cat"] == pytest.approx(0.1) and extras["scores"]["outdoor"] == pytest.approx(0.69)
    assert all(extras["scores"][k] < extras["thresholds"][k] for k in extras["scores"])


def test_control_threshold_overrides_the_workers() -> None:
    # <Choices name="objects" model_threshold="0.4">
    _, batch = run("multi_control", images(1), {"cat": 0.45, "dog": 0.3}, thresholds={"cat": 0.9})
    assert values(batch)["objects"] == {"choices": ["cat"]}


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"indoor": 0.8, "outdoor": 0.9}, {"choices": ["outdoor"]}),  # both pass: only the top
        ({"indoor": 0.3, "outdoor": 0.2}, {"choices": []}),  # none passes: no choice
    ],
)
def test_single_choice_selects_the_top_tag_only(scores: dict[str, float], expected: dict[str, Any] | None) -> None:
    _, batch = run("single_choice", images(1), scores)
    assert values(batch).get("scene") == expected


def test_taxonomy_emits_paths_and_drops_implied_ancestors() -> None:
    scores = {"Animal": 0.9, "Cat": 0.8, "Scene": 0.7, "Outdoor": 0.1, "Scene / Other": 0.6, "dog": 0.2}
    vocab, batch = run("taxonomy", tasks_of({"url": "/data/upload/1/a.jpg"}), scores)
    pred = batch.predictions[0]
    assert pred is not None

    (item,) = pred.result
    assert (item.type, item.from_name, item.to_name) == ("taxonomy", "taxo", "photo")
    assert item.value == {"taxonomy": [["Animal", "Cat"], ["Scene", "Other"]]}
    assert not prediction_errors(config("taxonomy"), pred.model_dump(exclude_none=True))


def test_taxonomy_max_usages_caps_the_selection() -> None:
    _, batch = run("taxonomy_leafs_only", images(1), {"Cat": 0.9, "Dog": 0.8, "Car": 0.7})
    assert values(batch)["taxo"] == {"taxonomy": [["Animal", "Cat"], ["Animal", "Dog"]]}


def test_several_controls_and_images() -> None:
    def by_image(ref: ImageRef) -> dict[str, float]:
        return {"cat": 0.9} if ref.url.startswith("/data/upload/2/b") else {"car": 0.8, "dog": 0.7}

    tasks = [Task.model_validate(t) for t in payload("tasks_two_images")]
    _, batch = run("two_images", tasks, by_image)

    for index in range(2):
        assert values(batch, index) == {"before_tags": {"choices": ["cat"]}, "after_tags": {"choices": ["car", "dog"]}}


def test_multi_control_prediction_skips_the_skipped_control() -> None:
    scores = {"cat": 0.9, "Kitchen": 0.8, "Indoor": 0.85, "good": 0.7, "blurry": 0.6, "needs review": 1.0}
    _, batch = run("multi_control", images(1), scores)
    assert values(batch) == {
        "objects": {"choices": ["cat"]},
        "scene": {"taxonomy": [["Indoor", "Kitchen"]]},
        "quality": {"choices": ["good"]},
    }


# --- the prediction's shape ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["multilabel", "taxonomy", "taxonomy_leafs_only", "multi_control", "single_choice"])
def test_every_prediction_validates_against_its_config(name: str) -> None:
    key = "url" if name == "taxonomy" else "image"
    tasks = tasks_of(*({key: f"/data/upload/1/{i}.jpg"} for i in range(4)))

    def varied(ref: ImageRef) -> dict[str, float]:
        seed = int(ref.key)
        return {label: ((seed * 37 + i * 11) % 100) / 100 for i, label in enumerate(vocab.labels)}

    vocab = parse_label_config(config(name))
    _, batch = run(name, tasks, varied)

    for entry in batch.ls_results():
        assert isinstance(entry, dict)
        assert entry["model_version"] == f"{VERSION}+{vocab.fingerprint}"
        assert 0.0 <= entry["score"] <= 1.0
        assert prediction_errors(config(name), entry) == []


def test_per_tag_scores_and_novel_marks_live_in_the_result_item() -> None:
    scores = {"cat": 0.9, "puppy": 0.8, "Person": 0.3}
    _, batch = run("multilabel", images(1), scores, thresholds={"Person": 0.4}, unseen=frozenset({"dog", "puppy"}))
    (entry,) = batch.ls_results()
    assert isinstance(entry, dict)
    (item,) = entry["result"]

    extras = item[SCORES_KEY]
    assert extras["scores"] == pytest.approx({"cat": 0.9, "dog": 0.8, "person": 0.3, "outdoor": 0.0})
    # Break-even 0.5 (the worker's 0.4 for Person is ignored); outdoor's own model_threshold 0.7 wins.
    assert extras["thresholds"] == pytest.approx({"cat": 0.5, "dog": 0.5, "person": 0.5, "outdoor": 0.7})
    assert extras["novel"] == ["dog"]
    assert list(extras["scores"])[:2] == ["cat", "dog"]  # selected first, by score
    assert len(item["id"]) == 10


def test_score_maps_are_capped_for_big_vocabularies() -> None:
    choices = "".join(f'<Choice value="tag{i:03d}"/>' for i in range(120))
    xml = (
        '<View><Image name="image" value="$image"/>'
        f'<Choices name="tags" toName="image" choice="multiple">{choices}</Choices></View>'
    )
    vocab = parse_label_config(xml)
    (request,), _ = build_predict_requests(vocab, images(1))
    result = fake_worker(request, {label: 0.3 + i / 1000 for i, label in enumerate(vocab.labels)} | {"tag000": 0.99})
    batch = predictions_from_results(vocab, images(1), [result])
    pred = batch.predictions[0]
    assert pred is not None and pred.result[0].assistant is not None

    kept = pred.result[0].assistant["scores"]
    assert len(kept) == MAX_SCORES_KEPT
    assert next(iter(kept)) == "tag000"  # the selected tag survives the cap, ahead of the rest
    assert "tag119" in kept and "tag001" not in kept  # then the highest scores


def test_without_a_max_tags_knob_a_prediction_selects_at_most_the_default_cap() -> None:
    choices = "".join(f'<Choice value="tag{i:03d}"/>' for i in range(120))
    xml = (
        '<View><Image name="image" value="$image"/>'
        f'<Choices name="tags" toName="image" choice="multiple">{choices}</Choices></View>'
    )
    vocab = parse_label_config(xml)
    (request,), _ = build_predict_requests(vocab, images(1))
    # Every one of the 120 tags passes its threshold (0.5).
    result = fake_worker(request, {label: 0.6 + i / 1000 for i, label in enumerate(vocab.labels)})
    pred = predictions_from_results(vocab, images(1), [result]).predictions[0]
    assert pred is not None
    chosen = pred.result[0].value["choices"]
    assert len(chosen) == DEFAULT_MAX_TAGS < 120
    assert chosen[0] == "tag119" and "tag000" not in chosen  # the highest scores are the ones kept


def test_item_ids_are_deterministic() -> None:
    _, first = run("multilabel", images(2), {"cat": 0.9})
    _, again = run("multilabel", images(2), {"cat": 0.9})
    ids = [p.result[0].id for p in first.predictions if p is not None]
    assert ids == [p.result[0].id for p in again.predictions if p is not None]
    assert len(set(ids)) == 2


# --- score = confidence ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scores", "thresholds", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0),  # on the threshold: as uncertain as it gets
        ([1.0, 0.0], [0.5, 0.5], 1.0),  # at the ends: certain
        ([0.75], [0.5], 0.5),  # halfway up the positive side
        ([0.1], [0.2], 0.5),  # halfway down the negative side, relative to its own threshold
        ([], [], 1.0),
    ],
)
def test_confidence(scores: list[float], thresholds: list[float], expected: float) -> None:
    assert confidence(scores, thresholds) == pytest.approx(expected)


def test_confidence_averages_the_most_uncertain_labels() -> None:
    # u = [1.0, 0.6, 0.2, 0.0]: the top 3 average 0.6, so confidence is 0.4, not 0.0 (the min).
    assert confidence([0.5, 0.7, 0.9, 1.0], [0.5] * 4) == pytest.approx(0.4)
    assert confidence([0.5, 0.7, 0.9, 1.0], [0.5] * 4, top_k=1) == pytest.approx(0.0)


def test_borderline_tasks_sort_first() -> None:
    def per_task(ref: ImageRef) -> dict[str, float]:
        return {"1": {"cat": 0.98, "dog": 0.01}, "2": {"cat": 0.52, "dog": 0.47}, "3": {"cat": 0.8, "dog": 0.2}}[
            ref.key
        ]

    _, batch = run("multilabel", images(3), per_task)
    scores = [p.score for p in batch.predictions if p is not None]

    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    ascending = sorted(range(3), key=lambda i: scores[i] or 0.0)
    assert ascending == [1, 2, 0]  # borderline task 2, then task 3, then the confident task 1


# --- failures ------------------------------------------------------------------------------------------
def test_failed_images_get_no_prediction_but_are_reported() -> None:
    tasks = [*images(3), Task(id=9, data={"photo": "x.jpg"}, project=1)]
    _, batch = run("multilabel", tasks, {"cat": 0.9}, failed={"2": "not_found"})

    results = batch.ls_results()
    assert len(results) == len(tasks)  # LS saves nothing unless the counts match
    assert [isinstance(r, dict) for r in results] == [True, False, True, False]
    assert results[1] == [] and results[3] == []
    assert {(f.task_id, f.reason) for f in batch.failures} == {(2, "not_found"), (9, "missing_data")}
    assert batch.response().model_dump(exclude_none=True)["results"][1] == []


def test_missing_worker_items_are_failures_not_silence() -> None:
    vocab = parse_label_config(config("multilabel"))
    tasks = images(2)
    (request,), _ = build_predict_requests(vocab, tasks)
    result = fake_worker(request, {"cat": 0.9})
    truncated = result.model_copy(update={"items": result.items[:1]})

    batch = predictions_from_results(vocab, tasks, [truncated])

    assert batch.predictions[1] is None
    assert batch.failures == (TaskFailure(2, "no_result", "no worker result for image 2 of task 2; retry"),)


def test_images_scored_by_two_versions_are_retried() -> None:
    vocab = parse_label_config(config("two_images"))
    tasks = [Task.model_validate(t) for t in payload("tasks_two_images")][:1]
    requests, _ = build_predict_requests(vocab, tasks, chunk_size=1)
    results = [fake_worker(r, {"cat": 0.9}, version=f"mkt-p2-r{i}") for i, r in enumerate(requests)]

    batch = predictions_from_results(vocab, tasks, results)

    assert batch.predictions == (None,)
    assert batch.failures[0].reason == "version_changed"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r.model_copy(update={"labels": [*r.labels[:-1], "other"]}),
        lambda r: r.model_copy(update={"thresholds": r.thresholds[:-1]}),
        lambda r: r.model_copy(update={"items": [r.items[0].model_copy(update={"scores": [0.5]})]}),
        lambda r: r.model_copy(
            update={"items": [r.items[0].model_copy(update={"scores": [float("nan")] * len(r.labels)})]}
        ),
    ],
)
def test_results_that_do_not_fit_the_request_are_refused(tamper: Callable[[PredictResult], PredictResult]) -> None:
    vocab = parse_label_config(config("multilabel"))
    (request,), _ = build_predict_requests(vocab, images(1))
    with pytest.raises(WorkerResultError) as info:
        predictions_from_results(vocab, images(1), [tamper(fake_worker(request, {"cat": 0.9}))])
    assert info.value.status_code == 502


# --- annotations → corrections ---------------------------------------------------------------------
def _item(control: str, value: dict[str, Any], to_name: str = "image") -> dict[str, Any]:
    kind = "taxonomy" if "taxonomy" in value else "choices"
    return {"from_name": control, "to_name": to_name, "type": kind, "value": value}


CAPTURED = payload("ls_setup")["schema"]  # tags: cat, dog(dog,puppy), outdoor; taxo: Animal/{Cat,Dog}, Scene/Outdoor
PARENT = Prediction(
    id=1,
    model_version="stub-v1",
    result=[_item("tags", {"choices": ["cat", "outdoor"]}), _item("taxo", {"taxonomy": [["Animal", "Cat"]]})],
)


def test_correction_from_a_real_annotation_event() -> None:
    (annotation,) = [Annotation.model_validate(payload("ls_webhook_annotation_created")["annotation"])]

    corr = annotation_to_correction(parse_label_config(CAPTURED), annotation, PARENT)

    assert (corr.task_id, corr.annotation_id, corr.parent_prediction, corr.prediction_version) == (1, 1, 1, "stub-v1")
    assert [(c.control, c.positives, c.negatives) for c in corr.controls] == [
        ("tags", ("cat",), ("outdoor",)),
        ("taxo", (), ("Animal / Cat",)),  # the annotator dropped the taxonomy item altogether
    ]
    assert corr.positive_labels == ("cat",)
    assert corr.negative_labels == ("outdoor", "Cat")


@pytest.mark.parametrize(
    ("result", "prediction", "expected"),
    [
        # result items, parent prediction, [(control, positives, negatives, positive labels, negative labels)]
        ([_item("tags", {"choices": ["cat"]})], None, [("tags", ("cat",), (), ("cat",), ())]),
        # a choice mapped from several model labels: present, but not which one; removed: all of them
        (
            [_item("tags", {"choices": ["dog"]})],
            Prediction(result=[_item("tags", {"choices": ["dog", "outdoor"]})]),
            [("tags", ("dog",), ("outdoor",), (), ("outdoor",))],
        ),
        (
            [_item("tags", {"choices": []})],
            Prediction(result=[_item("tags", {"choices": ["dog"]})]),
            [("tags", (), ("dog",), (), ("dog", "puppy"))],
        ),
        # a taxonomy path implies its ancestors; a removed child does not make its parent negative
        (
            [_item("taxo", {"taxonomy": [["Animal", "Dog"]]})],
            Prediction(result=[_item("taxo", {"taxonomy": [["Animal", "Cat"], ["Animal"]]})]),
            [("taxo", ("Animal", "Animal / Dog"), ("Animal / Cat",), ("Animal", "Dog"), ("Cat",))],
        ),
        # a choice the config no longer has
        ([_item("tags", {"choices": ["lion"]})], None, [("tags", ("lion",), (), (), ())]),
    ],
)
def test_corrections(
    result: list[dict[str, Any]], prediction: Prediction | None, expected: list[tuple[Any, ...]]
) -> None:
    annotation = Annotation(id=5, task=2, result=result)
    corr = annotation_to_correction(parse_label_config(CAPTURED), annotation, prediction)
    got = [(c.control, c.positives, c.negatives, c.positive_labels, c.negative_labels) for c in corr.controls]
    assert got == expected


def test_unknown_choices_are_reported() -> None:
    corr = annotation_to_correction(
        parse_label_config(CAPTURED), Annotation(result=[_item("tags", {"choices": ["lion", "cat"]})])
    )
    assert corr.controls[0].unknown == ("lion",)


def test_results_outside_the_vocabulary_are_ignored_not_lost() -> None:
    result = [
        _item("objects", {"choices": ["cat"]}),
        _item("review", {"choices": ["needs review"]}),  # model_skip="true"
        {"from_name": "notes", "to_name": "image", "type": "textarea", "value": {"text": ["blurry"]}},
        _item("gone", {"choices": ["x"]}),
    ]
    corr = annotation_to_correction(parse_label_config(config("multi_control")), Annotation(result=result))

    assert [c.control for c in corr.controls] == ["objects"]
    assert corr.ignored_controls == ("review", "notes", "gone")


def test_a_label_present_elsewhere_is_not_a_negative() -> None:
    xml = config("two_images")  # "dog" exists in both controls
    prediction = Prediction(result=[_item("before_tags", {"choices": ["dog"]}, "before")])
    annotation = Annotation(result=[_item("after_tags", {"choices": ["dog"]}, "after")])

    corr = annotation_to_correction(parse_label_config(xml), annotation, prediction)

    assert corr.controls[0].negative_labels == ("dog",)
    assert corr.positive_labels == ("dog",) and corr.negative_labels == ()


def test_cancelled_annotations_carry_no_signal() -> None:
    bulk = payload("webhook_annotations_created_bulk")["annotation"]
    corr = annotation_to_correction(
        parse_label_config(config("multilabel")), Annotation.model_validate(bulk[1]), PARENT
    )
    assert corr.cancelled and corr.controls == () and corr.positive_labels == ()


def test_the_prediction_must_be_the_parent() -> None:
    annotation = Annotation(id=5, parent_prediction=2, result=[])
    with pytest.raises(StudioError, match="not the parent"):
        annotation_to_correction(parse_label_config(CAPTURED), annotation, PARENT)
