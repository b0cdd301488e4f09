"""End to end: a real Label Studio, Redis, a Celery worker and ``assistant serve``, with coco128 photos.

The stack (module scope; every process it starts is stopped at the end, even when a test fails):

- Label Studio from the harness (``ls_server``, ``ls_client``);
- Redis DB 12 with a key prefix of its own (only those keys are deleted afterwards);
- a worker subprocess serving ``assistant.predict`` and ``backends.publish_predictions``, with a
  tiny random MKT checkpoint saved into tmp as the base model (``ASSISTANT_BASE_MODEL``);
- the backend as a real ``assistant serve`` (uvicorn) subprocess on 127.0.0.1, with a SQLite
  ledger under its home, ``predict_inline_max_tasks=3`` (a retrieval of more tasks goes to the
  background path) and 2 images per chunk (several chunks per retrieval).

The tests run in file order and build on each other: connect, retrieve (inline), pre-annotate
with the CLI (twice: the second run posts nothing), add a novel tag and retrieve again (the
background path), annotate (the webhook feeds the ledger), START_TRAINING, latencies.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from state.ledger import Ledger, open_ledger
from studio.config import parse_label_config
from tests.backends._fixtures import prediction_errors
from tests.conftest import REPO_ROOT
from tests.integration.ls_harness import LSClient, LSServer
from tests.integration.ls_stack_env import ls_stack_env
from tests.integration.processes import Process, assistant, free_port, healthy, sees_a_worker, wait_for
from tests.integration.redis_namespace import RedisNamespace
from tests.integration.story import Story
from tests.workers._helpers import save_tiny_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/12"
BASE_VERSION = "e2e-tiny-v1"
# model_threshold="0" selects every tag a random tiny model scores, model_max_tags keeps the top 2:
# the expected choices are then exactly the two best-scored keys of the item's per-tag scores.
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" showInline="true" model_threshold="0" model_max_tags="2">
    <Choice value="person"/>
    <Choice value="dog"/>
    <Choice value="giraffe"/>
    <Choice value="outdoor"/>
  </Choices>
</View>"""
NOVEL = "zebra"
CONFIG_WITH_NOVEL = CONFIG.replace('<Choice value="outdoor"/>', f'<Choice value="outdoor"/><Choice value="{NOVEL}"/>')
START_TIMEOUT_S = 120.0
BACKGROUND_TIMEOUT_S = 180.0


@dataclass
class Stack:
    """The running stack and what the tests share."""

    ls: LSClient
    server: LSServer
    backend_url: str
    home: Path
    env: dict[str, str]
    backend: Process
    worker: Process
    photos: list[Path]
    project: int = 0
    ml_id: int = 0
    uploaded: list[int] = field(default_factory=list)
    local: list[int] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[int]:
        return [*self.uploaded, *self.local]

    def ledger(self) -> Ledger:
        return open_ledger(None, home=self.home)

    def predictions(self, version: str) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, list[dict[str, Any]]] = {}
        for pred in self.ls.predictions(project=self.project):
            if pred["model_version"] == version:
                found.setdefault(int(pred["task"]), []).append(pred)
        return found

    def setup_version(self, config: str) -> str:
        resp = httpx.post(f"{self.backend_url}/setup", json={"project": self.project, "schema": config}, timeout=10)
        resp.raise_for_status()
        version: str = resp.json()["model_version"]
        return version

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        # COLUMNS=160 (assistant_env): the summary table's rows stay on one line each.
        return subprocess.run(
            assistant(*args), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def metrics(self) -> str:
        return httpx.get(f"{self.backend_url}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def photos(shared_datasets: Path) -> list[Path]:
    found = sorted((shared_datasets / "coco128" / "images" / "train2017").glob("*.jpg"))[:5]
    assert len(found) == 5
    return found


@pytest.fixture(scope="module")
def stack(
    ls_server: LSServer, ls_client: LSClient, photos: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    namespace = RedisNamespace(REDIS_URL, "e2e")  # skips when Redis is down
    root = tmp_path_factory.mktemp("backend-e2e")
    base = save_tiny_checkpoint(root / "base-model", BASE_VERSION)
    port = free_port()
    env = ls_stack_env(
        root,
        base,
        namespace,
        ls_server,
        predict_inline_max_tasks="3",
        predict_chunk_size="2",
        port=str(port),
    )
    worker = Process("worker", assistant("worker", "-Q", "predict", "-n", "e2e@%h"), env, root / "worker.log")
    backend = Process(
        "backend", assistant("serve", "--host", "127.0.0.1", "--port", str(port)), env, root / "backend.log"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the backend's /health", lambda: healthy(url), START_TIMEOUT_S, backend)
        wait_for("the worker to be ready", lambda: " ready." in worker.text(), START_TIMEOUT_S, worker)
        # Inline predictions need the backend to have seen the worker (it may have asked before).
        wait_for("the backend to see the worker", lambda: sees_a_worker(url), START_TIMEOUT_S, backend, worker)
        yield Stack(ls_client, ls_server, url, root / "home", env, backend, worker, photos)
    finally:
        backend.stop()
        worker.stop()
        namespace.close()


# --- the story ------------------------------------------------------------------------------------
story = Story()  # the tests below are one project's story (tests/integration/story.py)


@story.step
def test_connecting_the_backend_reports_checkpoint_plus_fingerprint(stack: Stack) -> None:
    stack.project = stack.ls.create_project(CONFIG)
    stack.uploaded = stack.ls.upload_images(stack.project, stack.photos[:3])
    stack.local = stack.ls.import_local_files(stack.project, stack.server.document_root, stack.photos[3:])
    assert len(stack.tasks) == 5

    stack.ml_id = stack.ls.connect_ml_backend(stack.project, stack.backend_url)

    backend = stack.ls.sdk.ml.get(id=stack.ml_id)
    expected = parse_label_config(CONFIG).model_version(BASE_VERSION)
    assert backend.state == "CO", backend
    assert backend.model_version == expected
    assert stack.setup_version(CONFIG) == expected


def _check_prediction(pred: dict[str, Any], config: str, version: str) -> dict[str, Any]:
    assert pred["model_version"] == version
    assert 0.0 <= pred["score"] <= 1.0
    assert prediction_errors(config, {"result": pred["result"], "score": pred["score"]}) == []
    (item,) = pred["result"]
    scores: dict[str, float] = item["assistant"]["scores"]
    assert set(scores) == set(parse_label_config(config).labels)
    top2 = sorted(scores, key=lambda k: -scores[k])[:2]
    assert sorted(item["value"]["choices"]) == sorted(top2)
    assert 0.0 <= item["score"] <= 1.0
    return item


@story.step
def test_retrieve_predictions_answers_small_selections_inline(stack: Stack) -> None:
    version = stack.setup_version(CONFIG)

    started = time.perf_counter()
    stack.ls.retrieve_predictions(stack.project, stack.uploaded)
    stack.measured["retrieve_inline_3_tasks_s"] = round(time.perf_counter() - started, 2)

    # Inline: stored by Label Studio by the time the action returns, one per task.
    stored = stack.predictions(version)
    assert sorted(stored) == sorted(stack.uploaded), stack.backend.text()[-3000:]
    for task in stack.uploaded:
        (pred,) = stored[task]
        _check_prediction(pred, CONFIG, version)
    assert "assistant_backend_predictions_total 3.0" in stack.metrics()


@story.step
def test_preannotate_predicts_the_rest_and_a_second_run_posts_nothing(stack: Stack) -> None:
    version = stack.setup_version(CONFIG)

    first = stack.cli("preannotate", "--project", str(stack.project), "--timeout", "240")
    assert first.returncode == 0, first.stdout + first.stderr
    stored = stack.predictions(version)
    assert sorted(stored) == sorted(stack.tasks), first.stdout + stack.worker.text()[-3000:]
    assert all(len(preds) == 1 for preds in stored.values())
    for task in stack.local:
        _check_prediction(stored[task][0], CONFIG, version)
    assert "3 already predicted" in first.stdout and "2 to predict" in first.stdout
    assert "Predicted" in first.stdout and "│ 2" in first.stdout.split("Predicted", 1)[1].splitlines()[0]

    second = stack.cli("preannotate", "--project", str(stack.project))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "5 already predicted" in second.stdout and "0 to predict" in second.stdout
    assert sum(len(p) for p in stack.predictions(version).values()) == 5


@story.step
def test_a_novel_tag_changes_the_version_and_large_selections_finish_in_background(stack: Stack) -> None:
    stack.ls.sdk.projects.update(id=stack.project, label_config=CONFIG_WITH_NOVEL)
    version = stack.setup_version(CONFIG_WITH_NOVEL)
    assert version != stack.setup_version(CONFIG) and version.startswith(f"{BASE_VERSION}+")

    started = time.perf_counter()
    stack.ls.retrieve_predictions(stack.project, stack.tasks)  # 5 tasks > 3: answered at once, empty
    stack.measured["retrieve_background_answer_s"] = round(time.perf_counter() - started, 2)
    assert stack.measured["retrieve_background_answer_s"] < 15

    stored = wait_for(
        "the background path to publish 5 predictions",
        lambda: found if len(found := stack.predictions(version)) == 5 else None,
        BACKGROUND_TIMEOUT_S,
        stack.worker,
        stack.backend,
    )
    stack.measured["background_publish_s"] = round(time.perf_counter() - started, 2)
    assert all(len(preds) == 1 for preds in stored.values())  # each posted exactly once
    for preds in stored.values():
        item = _check_prediction(preds[0], CONFIG_WITH_NOVEL, version)
        assert NOVEL in item["assistant"]["scores"]
        assert NOVEL in item["assistant"]["novel"]  # the base model never trained on it
    assert "assistant_backend_background_tasks_total 5.0" in stack.metrics()
    assert "assistant_background_published_total 7.0" in stack.metrics()  # 2 by preannotate + 5

    # The predictions round-trip through an export snapshot with their per-tag scores.
    exported = {t["id"]: t for t in stack.ls.export_snapshot(stack.project)}
    for task in stack.tasks:
        mine = [p for p in exported[task]["predictions"] if p["model_version"] == version]
        assert len(mine) == 1 and NOVEL in mine[0]["result"][0]["assistant"]["scores"]


@story.step
def test_annotations_reach_the_ledger_through_the_real_webhook(stack: Stack) -> None:
    version = stack.setup_version(CONFIG_WITH_NOVEL)
    task = stack.uploaded[0]
    (pred,) = stack.predictions(version)[task]
    result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["giraffe", NOVEL]}}]
    ledger = stack.ledger()
    try:
        before = ledger.count(stack.project)
        started = time.perf_counter()
        annotation = stack.ls.create_annotation(task, result, parent_prediction=pred["id"])
        created = wait_for(
            "ANNOTATION_CREATED in the ledger",
            lambda: [e for e in ledger.entries(stack.project) if e.event.action == "ANNOTATION_CREATED"],
            30,
            stack.backend,
            interval=0.05,
        )
        stack.measured["annotation_to_ledger_s"] = round(time.perf_counter() - started, 3)
        (entry,) = created
        assert entry.event.annotation_id == annotation["id"] and entry.event.task == task
        assert entry.event.parent_prediction == pred["id"]
        assert entry.event.result is not None and entry.event.result[0]["value"]["choices"] == ["giraffe", NOVEL]

        stack.ls.update_annotation(annotation["id"], [{**result[0], "value": {"choices": ["dog"]}}])
        updated = wait_for(
            "ANNOTATION_UPDATED in the ledger",
            lambda: [e for e in ledger.entries(stack.project) if e.event.action == "ANNOTATION_UPDATED"],
            30,
            stack.backend,
            interval=0.05,
        )
        assert updated[-1].event.result is not None and updated[-1].event.result[0]["value"]["choices"] == ["dog"]
        assert annotation["id"] in ledger.current_annotations(stack.project)

        stack.ls.sdk.annotations.delete(id=annotation["id"])
        deleted = wait_for(
            "ANNOTATIONS_DELETED in the ledger",
            lambda: [e for e in ledger.entries(stack.project) if e.deleted],
            30,
            stack.backend,
            interval=0.05,
        )
        assert deleted[-1].event.annotation_id == annotation["id"]
        assert annotation["id"] not in ledger.current_annotations(stack.project)
        assert ledger.count(stack.project) == before + 3
    finally:
        ledger.close()


@story.step
def test_start_training_queues_one_round(stack: Stack) -> None:
    stack.ls.sdk.ml.train(id=stack.ml_id)
    stack.ls.sdk.ml.train(id=stack.ml_id)

    metrics = stack.metrics()
    assert 'assistant_backend_webhook_events_total{action="START_TRAINING",outcome="queued"} 1.0' in metrics
    assert 'assistant_backend_webhook_events_total{action="START_TRAINING",outcome="already_queued"} 1.0' in metrics


@story.step
def test_health_and_webhook_latency_on_the_real_server(stack: Stack) -> None:
    health, webhook = [], []
    with httpx.Client(base_url=stack.backend_url, timeout=5) as http:
        for i in range(50):
            start = time.perf_counter()
            assert http.get("/health").status_code == 200
            health.append(time.perf_counter() - start)
            event = {
                "action": "ANNOTATION_CREATED",
                "project": {"id": stack.project},
                "annotation": {"id": 900_000 + i, "task": stack.uploaded[0], "project": stack.project,
                               "result": [{"from_name": "tags", "to_name": "image", "type": "choices",
                                           "value": {"choices": ["dog"]}}]},
            }  # fmt: skip
            start = time.perf_counter()
            assert http.post("/webhook", json=event).status_code == 201
            webhook.append(time.perf_counter() - start)

    def summary(values: list[float]) -> dict[str, float]:
        ms = sorted(v * 1000 for v in values)
        return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * len(ms)) - 1], 1),
                "max_ms": round(ms[-1], 1)}  # fmt: skip

    stack.measured["health"] = summary(health)
    stack.measured["webhook"] = summary(webhook)
    sys.stderr.write(f"\nbackend e2e measurements: {json.dumps(stack.measured)}\n")
    # Label Studio gives /health 1 s and a webhook 1 s: stay an order of magnitude below.
    assert stack.measured["health"]["p95_ms"] < 100 and stack.measured["webhook"]["p95_ms"] < 100, stack.measured
    assert stack.measured["webhook"]["max_ms"] < 500, stack.measured
