"""Contract tests of the ML backend's routes through TestClient, over a fake dispatcher.

Table-driven over the label-config and task fixtures in tests/fixtures; every prediction is
checked with the SDK's own validator (``LabelInterface.validate_prediction``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backends.convert import DEFAULT_MAX_TAGS, MAX_SCORES_KEPT, SCORES_KEY
from backends.state import MemoryState
from studio.config import parse_label_config
from tests.backends._app_fakes import FakeDispatcher, Harness, make_harness
from tests.backends._fixtures import config, payload, prediction_errors

GOOD_CONFIGS = ["multilabel", "single_choice", "taxonomy", "taxonomy_leafs_only", "multi_control", "two_images"]
BAD_CONFIGS = {
    "bad_broken_xml": "not valid XML",
    "bad_choices_not_on_image": "no <Choices> or <Taxonomy> attached to an <Image>",
    "bad_empty": "empty",
    "bad_empty_vocabulary": "no label to predict",
    "bad_image_value": 'value="',
    "bad_max_tags": "model_max_tags",
    "bad_no_choices": "no <Choice> the model can predict",
    "bad_no_image": "no <Image>",
    "bad_no_tag_control": "no <Choices> or <Taxonomy>",
    "bad_skip": "model_skip",
    "bad_threshold": "model_threshold",
    "bad_unknown_to_name": "toName",
}


def base_version(harness: Harness) -> str:
    return harness.registry.current(None).version


def tasks_for(name: str, n: int, first_id: int = 1) -> list[dict[str, Any]]:
    keys = parse_label_config(config(name)).value_keys
    return [
        {"id": first_id + i, "data": {k: f"/data/upload/1/{k}-{i}.jpg" for k in keys}, "project": 1} for i in range(n)
    ]


def predict_body(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tasks": tasks, "project": "1.1700000000", "label_config": config(name), "params": {"login": None}}


def assert_error(resp: Any, status: int, *fragments: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"detail", "request_id"}, body
    assert body["request_id"] == resp.headers["x-request-id"]
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]
    assert "Traceback" not in body["detail"]
    return body


# --- /health ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/health", "/"])
def test_health_answers_up_with_a_request_id(client: TestClient, path: str) -> None:
    resp = client.get(path)

    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "UP" and body["model_class"] == "MKTBackend"  # what Label Studio reads
    assert body["workers"] == {"queue": "predict", "consumed": None, "checked_s_ago": None}  # a fake dispatcher
    assert len(resp.headers["x-request-id"]) >= 8


def test_a_safe_incoming_request_id_is_kept_and_an_unsafe_one_replaced(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = client.get("/health", headers={"X-Request-ID": "bad id\nwith newline"}).headers["x-request-id"]
    assert replaced != "bad id\nwith newline" and " " not in replaced


# --- /setup -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GOOD_CONFIGS)
def test_setup_answers_checkpoint_plus_fingerprint(client: TestClient, harness: Harness, name: str) -> None:
    resp = client.post("/setup", json={"project": "1.1700000000", "schema": config(name), "extra_params": None})

    assert resp.status_code == 200, resp.text
    expected = parse_label_config(config(name)).model_version(base_version(harness))
    assert resp.json() == {"model_version": expected}


def test_setup_takes_label_studios_recorded_body(client: TestClient, harness: Harness) -> None:
    body = payload("ls_setup")

    resp = client.post("/setup", json={**body, "a_key_from_a_newer_label_studio": 1})

    assert resp.status_code == 200
    assert resp.json()["model_version"] == parse_label_config(body["schema"]).model_version(base_version(harness))


@pytest.mark.parametrize(("name", "fragment"), sorted(BAD_CONFIGS.items()))
def test_setup_refuses_unusable_configs_with_the_fix(client: TestClient, name: str, fragment: str) -> None:
    resp = client.post("/setup", json={"project": 1, "schema": config(name)})

    body = assert_error(resp, 422, fragment)
    assert "Fix:" in body["detail"]


def test_setup_serves_values_with_spaces_and_refuses_a_blank_one_with_the_fix(client: TestClient) -> None:
    # Issue 16 (6a): "dog " is served (and trained) as dog; a blank value is refused when the model
    # is connected, not discovered by a failed round later.
    spaced = config("multilabel").replace('<Choice value="cat"/>', '<Choice value="cat "/>')
    assert spaced != config("multilabel")
    served = client.post("/setup", json={"project": 1, "schema": spaced})
    assert served.status_code == 200
    assert served.json()["model_version"].endswith(parse_label_config(config("multilabel")).fingerprint)

    blank = config("multilabel").replace('<Choice value="cat"/>', '<Choice value="  "/>')
    body = assert_error(client.post("/setup", json={"project": 1, "schema": blank}), 422, "is blank")
    assert "predicted_values" in body["detail"] and "Fix:" in body["detail"]


def test_a_new_choice_changes_the_version(client: TestClient) -> None:
    original = config("multilabel")
    extended = original.replace('<Choice value="cat"/>', '<Choice value="cat"/><Choice value="zebra"/>')
    assert extended != original

    first = client.post("/setup", json={"project": 1, "schema": original}).json()["model_version"]
    second = client.post("/setup", json={"project": 1, "schema": extended}).json()["model_version"]

    assert first.split("+")[0] == second.split("+")[0]
    assert first != second


def test_a_promoted_checkpoint_changes_the_version(client: TestClient, harness: Harness, tmp_path: Path) -> None:
    before = client.post("/setup", json={"project": 7, "schema": config("multilabel")}).json()["model_version"]
    ckpt = tmp_path / "round-1"
    ckpt.mkdir()
    (ckpt / "sidecar.json").write_text(json.dumps({"version": "mkt-round-1", "tensors_sha256": "x"}))
    harness.registry.promote(7, harness.registry.register(ckpt, project=7).version)

    after = client.post("/setup", json={"project": 7, "schema": config("multilabel")}).json()["model_version"]
    other = client.post("/setup", json={"project": 8, "schema": config("multilabel")}).json()["model_version"]

    assert after.startswith("mkt-round-1+") and after.split("+")[1] == before.split("+")[1]
    assert other == before  # other projects keep the base model


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"project": 1}, 422, "empty"),
        ({"project": "not-a-project", "schema": "<View/>"}, 422, "project"),
        ({"project": 1, "schema": 42}, 422, "schema"),
        ([1, 2, 3], 422, "invalid request"),
    ],
)
def test_setup_refuses_wrong_types(client: TestClient, body: Any, status: int, fragment: str) -> None:
    assert_error(client.post("/setup", json=body), status, fragment)


def test_malformed_json_is_a_400_with_the_fix(client: TestClient) -> None:
    resp = client.post("/setup", content=b'{"project": 1, "schema": ', headers={"content-type": "application/json"})

    assert_error(resp, 400, "not valid JSON", "Fix:")


# --- /predict ---------------------------------------------------------------------------------------
def setup_version(client: TestClient, name: str) -> str:
    version: str = client.post("/setup", json={"project": 1, "schema": config(name)}).json()["model_version"]
    return version


@pytest.mark.parametrize("name", GOOD_CONFIGS)
def test_predict_gives_one_valid_prediction_per_task_in_order(client: TestClient, name: str) -> None:
    tasks = tasks_for(name, 5, first_id=40)
    version = setup_version(client, name)

    resp = client.post("/predict", json=predict_body(name, tasks))

    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == len(tasks)
    vocab = parse_label_config(config(name))
    for result in results:
        assert result["model_version"] == version
        assert 0.0 <= result["score"] <= 1.0
        assert prediction_errors(config(name), result) == []
        for item in result["result"]:
            extras = item[SCORES_KEY]
            empty = not vocab.control(item["from_name"]).keys_from_value(item["value"])
            assert set(extras) == {"scores", "thresholds", "novel"} | ({"note"} if empty else set())
            assert all(0.0 <= s <= 1.0 for s in extras["scores"].values())
            assert item["from_name"] in {c.name for c in vocab.active}


def test_predict_takes_label_studios_recorded_body(client: TestClient) -> None:
    body = payload("ls_predict")
    resp = client.post("/predict", json=body)

    assert resp.status_code == 200
    results = resp.json()["results"]
    assert len(results) == len(body["tasks"])
    assert all(r["model_version"].endswith("+" + parse_label_config(body["label_config"]).fingerprint) for r in results)


def choices_config(labels: list[str], extra: str = "") -> str:
    """A one-image, one-``<Choices>`` config over ``labels``."""
    choices = "".join(f'<Choice value="{label}"/>' for label in labels)
    return (
        '<View><Image name="image" value="$image"/>'
        f'<Choices name="tags" toName="image" choice="multiple"{extra}>{choices}</Choices></View>'
    )


def test_a_10000_label_vocabulary_is_set_up_and_predicted(client: TestClient, harness: Harness) -> None:
    labels = [f"tag {i:05d}" for i in range(10_000)]
    big = choices_config(labels)
    fingerprint = parse_label_config(big).fingerprint
    tasks = [{"id": 100 + i, "data": {"image": f"/data/upload/1/{i}.jpg"}, "project": 1} for i in range(8)]

    setup = client.post("/setup", json={"project": 1, "schema": big})
    resp = client.post("/predict", json={"tasks": tasks, "project": "1.1700000000", "label_config": big})

    assert setup.status_code == 200 and setup.json()["model_version"].endswith("+" + fingerprint)
    assert resp.status_code == 200, resp.text[:500]
    results = resp.json()["results"]
    assert len(results) == len(tasks) and all(r["model_version"] == setup.json()["model_version"] for r in results)
    for result in results:
        (item,) = result["result"]
        # The fake scores spread over [0, 1) with thresholds 0.5: thousands of tags pass, yet the
        # prediction keeps the DEFAULT_MAX_TAGS best ones and the per-tag score map stays capped.
        choices = item["value"]["choices"]
        assert len(choices) == DEFAULT_MAX_TAGS and set(choices) <= set(labels)
        # The score map holds exactly the selected tags (they fill its cap), each above its threshold.
        extras = item[SCORES_KEY]
        assert set(extras["scores"]) == set(choices)
        assert all(extras["scores"][c] >= extras["thresholds"][c] for c in choices)
        assert len(item[SCORES_KEY]["scores"]) == MAX_SCORES_KEPT and 0.0 <= result["score"] <= 1.0
    assert prediction_errors(big, results[0]) == []
    # Every worker request carried the whole vocabulary, in config order.
    assert [c.request.labels for c in harness.dispatcher.chunks] == [labels]


def test_tasks_without_a_usable_image_get_no_prediction_and_are_counted(client: TestClient) -> None:
    tasks = payload("tasks_bad_data")

    resp = client.post("/predict", json=predict_body("multilabel", tasks))

    results = resp.json()["results"]
    by_id = {t["id"]: r for t, r in zip(tasks, results, strict=True)}
    assert by_id[10] and by_id[16]  # a plain upload and an s3:// URL are images
    assert [tid for tid, r in by_id.items() if r == []] == [11, 12, 13, 14, 15]
    metrics = client.get("/metrics").text
    assert 'assistant_backend_failed_tasks_total{reason="missing_data"} 1.0' in metrics
    assert 'assistant_backend_failed_tasks_total{reason="bad_data"} 4.0' in metrics


def test_failed_images_get_no_prediction(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(failed_images={"2": "corrupt"}))
    with TestClient(harness.app) as client:
        results = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 3))).json()["results"]
        metrics = client.get("/metrics").text

    assert [r == [] for r in results] == [False, True, False]
    assert 'assistant_backend_failed_tasks_total{reason="corrupt"} 1.0' in metrics


def test_chunks_never_split_a_task_and_all_run_in_one_job(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, predict_chunk_size=3)
    with TestClient(harness.app) as client:
        results = client.post("/predict", json=predict_body("two_images", tasks_for("two_images", 4))).json()["results"]

    assert all(r != [] for r in results)
    (job, wait_s) = harness.dispatcher.jobs[0]
    assert wait_s == harness.settings.predict_inline_budget_s
    # Two images per task and 3 per chunk: one task per chunk, both images together.
    assert [c.task_ids for c in job.chunks] == [(1,), (2,), (3,), (4,)]
    assert all(len(c.request.images) == 2 for c in job.chunks)
    assert all(c.request.model_version == base_version(harness) for c in job.chunks)  # pinned


def test_unfinished_chunks_are_left_to_the_background_and_not_queued_twice(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(background_chunks={1}), predict_chunk_size=2)
    tasks = tasks_for("multilabel", 5)
    with TestClient(harness.app) as client:
        first = client.post("/predict", json=predict_body("multilabel", tasks)).json()["results"]
        second = client.post("/predict", json=predict_body("multilabel", tasks)).json()["results"]
        metrics = client.get("/metrics").text

    assert len(first) == 5 and [r == [] for r in first] == [False, False, True, True, False]
    # Tasks 3 and 4 are in flight: the second call answers them empty and does not queue them.
    (job2, _) = harness.dispatcher.jobs[1]
    assert sorted(t for c in job2.chunks for t in c.task_ids) == [1, 2, 5]
    assert [r == [] for r in second] == [False, False, True, True, True]  # task 5 now sits in chunk 1
    assert "assistant_backend_background_tasks_total 3.0" in metrics
    assert "assistant_backend_skipped_tasks_total 2.0" in metrics


def test_large_selections_go_to_the_background_at_once(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, predict_inline_max_tasks=3)
    with TestClient(harness.app) as client:
        results = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 4))).json()["results"]

    assert results == [[], [], [], []]
    assert harness.dispatcher.jobs[0][1] == 0.0


def test_a_failed_chunk_gives_its_tasks_no_prediction(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(failed_chunks={0}), predict_chunk_size=2)
    with TestClient(harness.app) as client:
        results = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 3))).json()["results"]
        metrics = client.get("/metrics").text

    assert [r == [] for r in results] == [True, True, False]
    assert 'assistant_backend_failed_tasks_total{reason="worker_error"} 2.0' in metrics
    # A failed chunk is released: the next call queues those tasks again.
    assert not harness.dispatcher.state.inflight


def test_a_worker_scoring_another_version_is_not_passed_on(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(version="mkt-other"))
    with TestClient(harness.app) as client:
        results = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 2))).json()["results"]
        metrics = client.get("/metrics").text

    assert results == [[], []]
    assert 'reason="version_mismatch"' in metrics


def test_no_tasks_gives_no_results(client: TestClient) -> None:
    assert client.post("/predict", json=predict_body("multilabel", [])).json() == {"results": []}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"tasks": [{"id": 1, "data": {}}]}, 422, "label_config"),
        ({"tasks": "nope", "label_config": "<View/>"}, 422, "tasks"),
        ({"tasks": [{"data": {"image": "x"}}], "label_config": config("multilabel")}, 422, "tasks.0.id"),
        ({"tasks": [{"id": 1, "data": {"image": "x"}}], "label_config": config("bad_no_image")}, 422, "no <Image>"),
        ({"tasks": [{"id": 1, "data": {"image": "x"}}], "label_config": "<View><Image"}, 422, "not valid XML"),
        ("just a string", 422, "invalid request"),
    ],
)
def test_predict_refuses_bad_bodies_with_a_4xx(client: TestClient, body: Any, status: int, fragment: str) -> None:
    assert_error(client.post("/predict", json=body), status, fragment)


def test_a_huge_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, max_body_bytes=4096)
    big = predict_body("multilabel", tasks_for("multilabel", 200))
    with TestClient(harness.app) as client:
        declared = client.post("/predict", json=big)

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
            raw = json.dumps(big).encode()
            for start in range(0, len(raw), 1000):
                yield raw[start : start + 1000]

        streamed = client.post("/predict", content=chunked(), headers={"content-type": "application/json"})

    assert_error(declared, 413, "exceeds 4096 bytes", "ASSISTANT_MAX_BODY_BYTES")
    assert_error(streamed, 413, "exceeds 4096 bytes")
    assert harness.dispatcher.jobs == []


def test_an_internal_error_is_a_500_without_the_traceback(tmp_path: Path) -> None:
    boom = RuntimeError("internal detail that must not leak")
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(raise_on_predict=boom))
    with TestClient(harness.app) as client:
        resp = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 1)))
        metrics = client.get("/metrics").text

    body = assert_error(resp, 500, "request id")
    assert "internal detail" not in body["detail"]
    assert 'assistant_backend_errors_total{kind="5xx",route="/predict"} 1.0' in metrics


# --- routing, /versions, /metrics -------------------------------------------------------------------
def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "no route /nope", "/predict")
    assert_error(client.get("/predict"), 405, "GET is not allowed")


def test_versions_lists_what_setup_served_newest_first(client: TestClient) -> None:
    assert client.get("/versions").json() == {"versions": []}
    first = setup_version(client, "multilabel")
    second = setup_version(client, "taxonomy")

    assert client.get("/versions").json() == {"versions": [second, first]}
    assert client.get("/versions", params={"project": 1}).json()["versions"][0] == second
    assert client.get("/versions", params={"project": 99}).json() == {"versions": []}


def test_metrics_expose_latency_predictions_and_errors(client: TestClient) -> None:
    client.get("/health")
    client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 2)))
    client.post("/setup", json={"project": 1, "schema": config("bad_no_image")})

    resp = client.get("/metrics")

    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'assistant_backend_request_seconds_bucket{le="0.001",method="GET",route="/health"}' in text
    assert 'assistant_backend_request_seconds_count{method="POST",route="/predict"} 1.0' in text
    assert "assistant_backend_predictions_total 2.0" in text
    assert 'assistant_backend_errors_total{kind="4xx",route="/setup"} 1.0' in text
    assert 'assistant_backend_requests_total{method="POST",route="/setup",status="422"} 1.0' in text


@pytest.mark.parametrize("module", ["backends.main", "backends.app", "backends.tasks", "backends.bulk"])
def test_the_web_tier_never_loads_the_model(module: str) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"torch", "open_clip", "assistant", "transformers", "workers.tasks", "workers.runtime"}


class BrokenRedisState(MemoryState):
    """A shared state whose Redis is down."""

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        import redis

        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    record_version = reserve = served_versions = _down  # type: ignore[assignment]


def test_redis_down_keeps_setup_working_and_gives_predict_a_503(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(state=BrokenRedisState()))
    with TestClient(harness.app) as client:
        setup = client.post("/setup", json={"project": 1, "schema": config("multilabel")})
        predict = client.post("/predict", json=predict_body("multilabel", tasks_for("multilabel", 1)))
        versions = client.get("/versions")

    assert setup.status_code == 200  # /versions loses an entry; LS keeps working
    assert_error(predict, 503, "task queue is unreachable", "ASSISTANT_BROKER_URL")
    assert_error(versions, 503, "served versions")
