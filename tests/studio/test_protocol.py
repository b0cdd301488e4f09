"""The LS wire models against payloads captured from Label Studio 1.23.2 (tests/fixtures/tasks/ls_*.json)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from studio.protocol import (
    Annotation,
    LSPredictRequest,
    LSPredictResponse,
    Prediction,
    ResultItem,
    SetupRequest,
    WebhookEvent,
    parse_project_id,
)
from tests.backends._fixtures import payload


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3.1746612998", 3),
        ("3", 3),
        (" 12.5 ", 12),
        (3, 3),
        ({"id": 4, "title": "x"}, 4),
        ({"id": "5.17"}, 5),
        ({"title": "an object without id"}, None),
        (None, None),
        ("", None),
    ],
)
def test_parse_project_id(value: object, expected: int | None) -> None:
    assert parse_project_id(value) == expected


@pytest.mark.parametrize("value", ["abc", "x.3", True, 3.5, [3]])
def test_parse_project_id_refuses_non_references(value: object) -> None:
    with pytest.raises(ValueError, match="not a project reference"):
        parse_project_id(value)


def test_setup_request_from_label_studio() -> None:
    req = SetupRequest.model_validate(payload("ls_setup"))

    assert req.project == 1
    assert req.label_config.startswith("<View>")
    assert req.hostname is not None and req.hostname.startswith("http://127.0.0.1:")
    assert req.extra_params is None
    # The token is kept but never shown in reprs or logs.
    assert req.access_token is not None and "0000" not in repr(req)


def test_setup_request_ignores_unknown_fields_and_takes_old_model_version() -> None:
    body = {**payload("ls_setup"), "model_version": "old-ls", "brand_new": {"x": 1}, "extra_params": {"k": 1}}
    req = SetupRequest.model_validate(body)
    assert (req.model_version, req.extra_params) == ("old-ls", {"k": 1})
    assert "brand_new" not in req.model_dump()


def test_setup_request_refuses_a_bad_project() -> None:
    with pytest.raises(ValidationError, match="not a project reference"):
        SetupRequest.model_validate({"project": "project-three", "schema": "<View/>"})


def test_predict_request_from_label_studio() -> None:
    body = payload("ls_predict")
    req = LSPredictRequest.model_validate(body)

    assert req.project == 1
    assert [t.id for t in req.tasks] == [t["id"] for t in body["tasks"]]
    assert req.tasks[0].data["image"].startswith("/data/upload/1/")
    assert req.tasks[1].data["image"].startswith("/data/local-files/?d=")
    assert all(t.project == 1 for t in req.tasks)
    assert req.params.context is None and req.params.password is None


def test_predict_request_tolerates_newer_label_studio() -> None:
    body = payload("ls_predict")
    body["params"]["hostname"] = "http://ls:8080"  # arrived in 2026 (HumanSignal/label-studio PR #9649)
    body["tasks"][0]["drafts"] = []
    body["model_version"] = "v0"
    req = LSPredictRequest.model_validate(body)
    assert req.model_version == "v0" and len(req.tasks) == 2


def test_predict_response_keeps_our_extras_and_empty_entries() -> None:
    item = ResultItem(
        from_name="tags",
        to_name="image",
        type="choices",
        value={"choices": ["cat"]},
        assistant={"scores": {"cat": 0.9}},
    )
    resp = LSPredictResponse(results=[Prediction(model_version="v+abcd1234", score=0.3, result=[item]), []])
    dumped = resp.model_dump(mode="json", exclude_none=True)

    assert dumped["results"][1] == []
    assert dumped["results"][0]["result"][0]["assistant"] == {"scores": {"cat": 0.9}}
    assert "task" not in dumped["results"][0] and "id" not in dumped["results"][0]


def test_prediction_tolerates_a_null_version() -> None:
    assert Prediction.model_validate({"model_version": None, "result": []}).model_version == ""


def _event(name: str) -> WebhookEvent:
    return WebhookEvent.model_validate(payload(name))


@pytest.mark.parametrize(
    ("name", "kind", "project", "annotations", "deleted"),
    [
        ("ls_webhook_annotation_created", "annotation", 1, [1], []),
        ("ls_webhook_annotation_updated", "annotation", 1, [1], []),
        ("ls_webhook_annotations_deleted", "delete", 1, [], [1]),
        ("webhook_annotation_deleted_singular", "delete", 3, [55], [55]),
        ("webhook_annotations_created_bulk", "annotation", 3, [61, 62], []),
        ("ls_webhook_start_training", "train", 1, [], []),
        ("webhook_tasks_created", "other", 3, [], []),
    ],
)
def test_webhook_events(name: str, kind: str, project: int, annotations: list[int], deleted: list[int]) -> None:
    event = _event(name)

    assert event.kind == kind
    assert event.project_id == project
    assert [a.id for a in event.annotation_list] == annotations
    assert event.deleted_ids == deleted


def test_annotation_event_carries_parent_prediction_and_result() -> None:
    (ann,) = _event("ls_webhook_annotation_created").annotation_list
    assert (ann.task, ann.project, ann.parent_prediction, ann.completed_by) == (1, 1, 1, 1)
    assert ann.result[0].value == {"choices": ["cat"]}
    assert ann.result[0].origin == "prediction-changed"


def test_bulk_event_parses_string_projects_and_cancelled_annotations() -> None:
    first, second = _event("webhook_annotations_created_bulk").annotation_list
    assert first.project == 3 and first.lead_time == pytest.approx(2.5)
    assert second.was_cancelled and second.result == []


def test_start_training_reads_the_project_from_the_project_object() -> None:
    event = _event("ls_webhook_start_training")
    assert event.annotation is None and event.task is None
    assert event.project is not None and event.project.label_config is not None


@pytest.mark.parametrize("project", [7, "7", "7.1700000000"])
def test_webhook_project_may_be_a_bare_reference(project: Any) -> None:
    event = WebhookEvent.model_validate({"action": "START_TRAINING", "project": project})
    assert event.project_id == 7


def test_webhook_project_falls_back_to_the_annotation() -> None:
    event = WebhookEvent.model_validate({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "project": 9}})
    assert event.project_id == 9


def test_annotation_result_needs_the_core_keys() -> None:
    with pytest.raises(ValidationError):
        Annotation.model_validate({"id": 1, "result": [{"from_name": "tags", "value": {}}]})
