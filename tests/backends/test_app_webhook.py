"""``/webhook`` and ``/train``: annotation events into the ledger, START_TRAINING into one queued round."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.backends._app_fakes import Harness
from tests.backends._fixtures import payload
from tests.backends.test_app import assert_error


@pytest.mark.parametrize(
    ("fixture", "project", "actions", "annotation_ids"),
    [
        ("ls_webhook_annotation_created", 1, ["ANNOTATION_CREATED"], [1]),
        ("ls_webhook_annotation_updated", 1, ["ANNOTATION_UPDATED"], [1]),
        ("ls_webhook_annotations_deleted", 1, ["ANNOTATIONS_DELETED"], [1]),
        ("webhook_annotation_deleted_singular", 3, ["ANNOTATION_DELETED"], [55]),
        ("webhook_annotations_created_bulk", 3, ["ANNOTATIONS_CREATED"] * 2, [61, 62]),
    ],
)
def test_annotation_events_are_appended_to_the_ledger(
    client: TestClient, harness: Harness, fixture: str, project: int, actions: list[str], annotation_ids: list[int]
) -> None:
    body = payload(fixture)

    resp = client.post("/webhook", json=body)

    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "recorded" and resp.json()["recorded"] == len(actions)
    entries = harness.ledger.entries(project)
    assert [e.event.action for e in entries] == actions
    assert [e.event.annotation_id for e in entries] == annotation_ids


def test_a_created_annotation_keeps_its_result_task_and_parent_prediction(client: TestClient, harness: Harness) -> None:
    body = payload("ls_webhook_annotation_created")
    client.post("/webhook", json=body)

    (entry,) = harness.ledger.entries(1)

    sent = body["annotation"]
    assert entry.event.result == sent["result"]  # verbatim, "origin" included
    assert entry.event.task == sent["task"] and entry.event.parent_prediction == sent["parent_prediction"]
    assert entry.event.completed_by == sent["completed_by"] and entry.event.created_at == sent["updated_at"]


def test_a_resent_event_is_stored_once_and_an_update_is_a_new_row(client: TestClient, harness: Harness) -> None:
    created = payload("ls_webhook_annotation_created")
    first = client.post("/webhook", json=created).json()
    again = client.post("/webhook", json=created).json()
    client.post("/webhook", json=payload("ls_webhook_annotation_updated"))

    assert (first["recorded"], again["recorded"], again["duplicates"]) == (1, 0, 1)
    assert harness.ledger.count(1) == 2


def test_bulk_creation_records_the_cancelled_one_too(client: TestClient, harness: Harness) -> None:
    client.post("/webhook", json=payload("webhook_annotations_created_bulk"))

    cancelled = {e.event.annotation_id: e.event.was_cancelled for e in harness.ledger.entries(3)}

    assert cancelled == {61: False, 62: True}


def test_other_events_are_ignored_with_200(client: TestClient, harness: Harness) -> None:
    for body in (payload("webhook_tasks_created"), {"action": "PROJECT_UPDATED", "project": {"id": 3}}):
        resp = client.post("/webhook", json=body)
        assert resp.status_code == 200 and resp.json()["status"] == "ignored"
    assert harness.ledger.count(3) == 0


def test_start_training_queues_one_round_per_project(client: TestClient, harness: Harness) -> None:
    body = payload("ls_webhook_start_training")

    first = client.post("/webhook", json=body)
    second = client.post("/webhook", json=body)
    other = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 2}})

    assert first.status_code == 201 and first.json()["status"] == "queued"
    assert second.status_code == 201 and second.json()["status"] == "already_queued"
    assert second.json()["task_id"] == first.json()["task_id"]
    assert other.json()["status"] == "queued"
    assert harness.dispatcher.rounds == [(1, "start_training"), (2, "start_training")]
    # Once the round finished, the next START_TRAINING queues a new one.
    harness.dispatcher.finished_rounds.add(first.json()["task_id"])
    assert client.post("/webhook", json=body).json()["status"] == "queued"


def test_legacy_train_route_is_an_alias(client: TestClient, harness: Harness) -> None:
    body = {"annotations": [], "project": "5.1700000000", "label_config": "<View/>", "params": {"password": "x"}}

    resp = client.post("/train", json=body)

    assert resp.status_code == 201 and resp.json()["status"] == "queued" and resp.json()["project"] == 5
    assert harness.dispatcher.rounds == [(5, "start_training")]
    assert_error(client.post("/train", json={"project": "nope"}), 422, "Not a project reference")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"project": {"id": 1}}, 422, "action"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, 400, "carries no annotation"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": []}}, 400, "names no project"),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}}, 400, "lists no annotation ids"),
        ({"action": "START_TRAINING"}, 400, "names no project"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}, "project": 1}, 422, "annotation"),
        ([{"action": "ANNOTATION_CREATED"}], 422, "invalid request"),
    ],
)
def test_malformed_events_get_a_4xx(client: TestClient, body: Any, status: int, fragment: str) -> None:
    assert_error(client.post("/webhook", json=body), status, fragment)


def test_webhook_metrics_count_actions_and_outcomes(client: TestClient) -> None:
    client.post("/webhook", json=payload("ls_webhook_annotation_created"))
    client.post("/webhook", json=payload("webhook_tasks_created"))
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})

    text = client.get("/metrics").text

    assert 'assistant_backend_webhook_events_total{action="ANNOTATION_CREATED",outcome="recorded"} 1.0' in text
    assert 'assistant_backend_webhook_events_total{action="TASKS_CREATED",outcome="ignored"} 1.0' in text
    assert 'assistant_backend_webhook_events_total{action="ANNOTATION_CREATED",outcome="error"} 1.0' in text


def test_recording_an_event_takes_well_under_label_studios_second(client: TestClient) -> None:
    body = payload("ls_webhook_annotation_created")
    timings = []
    for i in range(50):
        body["annotation"]["id"] = 1000 + i  # a new annotation each time: a real insert and fsync
        start = time.perf_counter()
        assert client.post("/webhook", json=body).status_code == 201
        timings.append(time.perf_counter() - start)

    # In-process; the real-server figure is measured by the end-to-end test.
    assert statistics.median(timings) < 0.1 and max(timings) < 1.0, timings
