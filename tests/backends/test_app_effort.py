"""The backend's side of the effort ledger: the webhook asks for a count, ``/metrics`` exports the figures,
``/predict`` serves with the project's refit and guard."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backends.convert import EMPTY_NOTE, SCORES_KEY
from preannotation import LogitMap, Recalibration
from state.effort_records import CountedAnnotation, GuardState, TagAnswer
from tests.backends._app_fakes import Harness
from tests.backends._fixtures import payload

CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple"><Choice value="cat"/><Choice value="dog"/></Choices>
</View>"""


def test_an_annotation_event_asks_for_a_count_and_a_failed_request_never_fails_the_webhook(
    client: TestClient, harness: Harness
) -> None:
    assert client.post("/webhook", json=payload("ls_webhook_annotation_created")).status_code == 201
    assert harness.dispatcher.counts == [1]
    assert client.post("/webhook", json=payload("ls_webhook_annotation_created")).json()["duplicates"] == 1
    assert harness.dispatcher.counts == [1]  # nothing new recorded: nothing to count
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}).status_code == 200
    assert harness.dispatcher.counts == [1]

    harness.dispatcher.raise_on_count = ConnectionError("the broker is away")
    resp = client.post("/webhook", json=payload("ls_webhook_annotation_updated"))
    assert resp.status_code == 201 and resp.json()["recorded"] == 1  # recorded: the beat's pass counts it
    metrics = client.get("/metrics").text
    assert 'assistant_backend_webhook_events_total{action="ANNOTATION_UPDATED",outcome="count_not_queued"} 1.0' in (
        metrics
    )


def test_metrics_export_the_effort_figures_per_project_and_version(client: TestClient, harness: Harness) -> None:
    store = harness.ledger.effort
    checkpoint = harness.registry.current(4).version
    answers = (TagAnswer("cat", True, True), TagAnswer("dog", True, False), TagAnswer("sofa", False, True))
    store.record(4, through=0, counted=[CountedAnnotation(1, 1, 1, 9, "parent", f"{checkpoint}+ab", "default",
                                                          None, answers, "2026-03-02T10:00:00Z")])  # fmt: skip
    store.note_serving(4, checkpoint, "default")
    store.save_refit(4, checkpoint, recalibration=None, annotations=1, through_seq=1, error="boom")
    store.set_guard(4, GuardState("dog", "tripped", checkpoint, reason="tripped"), "tripped", 0, 20)

    text = client.get("/metrics").text

    labels = f'model_version="{checkpoint}+ab",project="4"'
    for line in (
        "assistant_effort_up 1.0",
        f"assistant_effort_tasks_total{{{labels}}} 1.0",
        f"assistant_effort_kept_total{{{labels}}} 1.0",
        f"assistant_effort_removed_total{{{labels}}} 1.0",
        f"assistant_effort_added_total{{{labels}}} 1.0",
        'assistant_effort_ratio{project="4",scope="in_service"} 1.0',  # 2 edits for 2 true tags
        'assistant_effort_refits_total{project="4",status="failed"} 1.0',
        'assistant_guard_tripped_tags{project="4"} 1.0',
        'assistant_effort_cautious{project="4"} 1.0',  # unmeasured calibration, no fitted refit
        'assistant_effort_count_failures{project="4"} 0.0',
    ):
        assert line in text, line

    harness.ledger.close()  # the database goes away: the scrape still answers
    assert "assistant_effort_up 0.0" in client.get("/metrics").text


def test_predict_serves_with_the_projects_refit_and_guard(client: TestClient, harness: Harness) -> None:
    checkpoint = harness.registry.current(1).version
    store = harness.ledger.effort
    store.set_guard(1, GuardState("cat", "tripped", checkpoint, reason="tripped"), "tripped", 1, 20)
    refit = store.save_refit(
        1, checkpoint, recalibration=Recalibration(LogitMap(1.0, -0.5, 30), {}, checkpoint, 30), annotations=20,
        through_seq=20,
    )  # fmt: skip
    body = {
        "tasks": [{"id": 12, "data": {"image": "/data/upload/1/a.jpg"}, "project": 1}],
        "project": "1.1700000000",
        "label_config": CONFIG,
    }
    resp = client.post("/predict", json=body)

    assert resp.status_code == 200, resp.text
    (prediction,) = resp.json()["results"]
    (item,) = prediction["result"]
    # The fake worker's pseudo scores for task 12: cat 0.06, dog 0.91 (0.85 after the refit).
    assert item["value"]["choices"] == ["dog"]
    extras = item[SCORES_KEY]
    assert extras["suppressed"] == ["cat"] and extras["recalibration"] == refit.id
    assert extras["scores"]["dog"] == pytest.approx(0.8546, abs=1e-3) and extras["model_scores"]["dog"] == 0.9062

    # Tags tripped by the guard are absent even when the model is sure of them (task 13: cat 0.98, dog 0.70).
    store.set_guard(1, GuardState("dog", "tripped", checkpoint, reason="tripped"), "tripped", 1, 20)
    body["tasks"][0]["id"] = 13  # a task not yet in flight
    (again,) = client.post("/predict", json=body).json()["results"]
    (empty,) = again["result"]  # nothing shown: an empty selection that keeps the scores and says why
    assert empty["value"]["choices"] == [] and empty[SCORES_KEY]["note"] == EMPTY_NOTE
    assert empty[SCORES_KEY]["scores"]["dog"] > 0.5 and empty[SCORES_KEY]["suppressed"] == ["cat", "dog"]


def test_the_served_calibration_is_recorded_once_per_process_and_a_failure_is_not_fatal(harness: Harness) -> None:
    from backends.serving import ServedCalibrations

    store = harness.ledger.effort
    served = ServedCalibrations(store)
    served.note(2, "mkt-a", "default")
    served.note(2, "mkt-a", "default")
    served.note(None, "mkt-a", "platt")  # no project: nothing to record
    served.note(2, "mkt-b", "")  # an older worker that does not say
    assert store.serving(2, "mkt-a") == "default" and store.serving(2, "mkt-b") is None
    harness.ledger.close()
    served.note(3, "mkt-a", "platt")  # the database is gone: logged, predictions go on
    ServedCalibrations(None).note(3, "mkt-a", "platt")


def test_a_burst_of_annotations_asks_for_one_count_until_it_starts() -> None:
    from backends.dispatch import COUNT_EFFORT, CeleryDispatcher
    from backends.state import MemoryState

    sent: list[tuple[str, dict[str, object], str]] = []

    class App:
        def send_task(self, name: str, *, kwargs: dict[str, object], queue: str, retry: bool) -> None:
            assert retry is False  # the rows are recorded: never hold the caller on the broker
            sent.append((name, kwargs, queue))

    state = MemoryState()
    dispatcher = CeleryDispatcher(App(), state, predict_queue="predict", publish_queue="light", train_queue="train")  # type: ignore[arg-type]
    for project in (3, 3, 3, 4):
        dispatcher.count_effort(project)
    assert [(name, kw["project"], queue) for name, kw, queue in sent] == [
        (COUNT_EFFORT, 3, "light"),
        (COUNT_EFFORT, 4, "light"),
    ]
    # The task removes the mark when it starts: an annotation after that asks again.
    state.release_lock("count-queued:3", str(sent[0][1]["token"]))
    dispatcher.count_effort(3)
    assert len(sent) == 3 and sent[2][1]["token"] != sent[0][1]["token"]
