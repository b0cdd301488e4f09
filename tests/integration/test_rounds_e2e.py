"""End to end: corrections posted to a real Label Studio become a round, a new version and fresh predictions.

The stack (module scope; every process is stopped at the end, even when a test fails):

- Label Studio from the harness (``ls_server``, ``ls_client``), 24 uploaded synthetic images whose
  tags are coloured stripes (a tiny model can learn them);
- Redis DB 11 with a key prefix of its own (only those keys are deleted afterwards);
- ``assistant serve`` (the backend) and worker subprocesses serving ``predict`` and ``train``
  (and the backend's publish task), with a tiny random MKT checkpoint as the base model and
  round settings small enough for a CPU: a few epochs, a 30% held-out share, a 3 s heartbeat.

The tests run in file order and build on each other: connect and pre-annotate, annotate through
the API (parent predictions set), START_TRAINING → a round → a new version that ``/setup``
reports → Label Studio re-predicts with it; then a round killed mid-training (SIGKILL of its
worker) leaves the version in service, and the next START_TRAINING runs a clean round.

The promotion tolerance is set wide (100 mAP points): a random tiny model says nothing about
accuracy, and this test checks the mechanics (the simulation checks the decisions).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from state.registry import Registry
from tests.helpers import colour_world, save_pngs
from tests.integration.ls_harness import LSClient, LSServer
from tests.integration.ls_stack_env import SMALL_ROUNDS, ls_stack_env
from tests.integration.processes import Process, assistant, free_port, healthy, wait_for
from tests.integration.redis_namespace import RedisNamespace
from tests.workers._helpers import save_tiny_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/11"
LABELS = ["red", "green", "blue", "stripes"]
# The base checkpoint's version (as the backend e2e's).
BASE_VERSION = "e2e-tiny-v1"
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="tags" toName="image" choice="multiple" '
    'model_threshold="0.5">' + "".join(f'<Choice value="{n}"/>' for n in LABELS) + "</Choices></View>"
)
N_TASKS = 24
START_TIMEOUT_S = 120.0
ROUND_TIMEOUT_S = 300.0


def _worker_command(name: str, queues: str) -> list[str]:
    code = (
        "from celery.signals import setup_logging; import logging, sys\n"
        "logging.basicConfig(level='INFO', stream=sys.stderr, force=True)\n"
        "setup_logging.connect(lambda **_: None, weak=False)\n"
        "from workers.celery_app import DEFAULT_INCLUDE, make_celery\n"
        "from state.settings import get_settings\n"
        "app = make_celery(get_settings(), include=[*DEFAULT_INCLUDE, 'backends.tasks'])\n"
        f"app.worker_main(['worker', '--queues={queues}', '--pool=solo', '--concurrency=1', '--loglevel=INFO',"
        f" '--hostname={name}@%h'])\n"
    )
    return [sys.executable, "-c", code]


@dataclass
class Stack:
    ls: LSClient
    server: LSServer
    backend_url: str
    root: Path
    env: dict[str, str]
    backend: Process
    images: list[Path]
    workers: list[Process] = field(default_factory=list)
    project: int = 0
    ml_id: int = 0
    tasks: list[int] = field(default_factory=list)

    @property
    def registry(self) -> Registry:
        return Registry(self.root / "home" / "models", self.env["ASSISTANT_BASE_MODEL"])

    def start_worker(self, name: str, queues: str = "predict,train", **env: str) -> Process:
        worker = Process(name, _worker_command(name, queues), {**self.env, **env}, self.root / f"{name}.log")
        self.workers.append(worker)
        wait_for(f"worker {name} to be ready", lambda: " ready." in worker.text(), START_TIMEOUT_S, worker)
        return worker

    def setup_version(self) -> str:
        resp = httpx.post(f"{self.backend_url}/setup", json={"project": self.project, "schema": CONFIG}, timeout=10)
        resp.raise_for_status()
        version: str = resp.json()["model_version"]
        return version

    def predictions(self, version: str) -> dict[int, dict[str, Any]]:
        return {int(p["task"]): p for p in self.ls.predictions(project=self.project) if p["model_version"] == version}

    def wait_for_new_version(self, old: str, *procs: Process) -> str:
        return str(
            wait_for(
                "/setup to report a new version",
                lambda: v if (v := self.setup_version()) != old else None,
                ROUND_TIMEOUT_S,
                self.backend,
                *procs,
                interval=1.0,
            )
        )


@pytest.fixture(scope="module")
def stack(ls_server: LSServer, ls_client: LSClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    namespace = RedisNamespace(REDIS_URL, "rounds-e2e")  # skips when Redis is down
    root = tmp_path_factory.mktemp("rounds-e2e")
    base = save_tiny_checkpoint(root / "base-model", BASE_VERSION)
    pixels, _ = colour_world(N_TASKS, len(LABELS), seed=7, size=64)
    images = save_pngs(pixels, root / "images", "stripes")
    port = free_port()
    env = ls_stack_env(
        root,
        base,
        namespace,
        ls_server,
        port=str(port),
        **SMALL_ROUNDS,
    )
    backend = Process(
        "backend", assistant("serve", "--host", "127.0.0.1", "--port", str(port)), env, root / "backend.log"
    )
    url = f"http://127.0.0.1:{port}"
    built = Stack(ls_client, ls_server, url, root, env, backend, images)
    try:
        wait_for("the backend's /health", lambda: healthy(url), START_TIMEOUT_S, backend)
        yield built
    finally:
        backend.stop()
        for worker in built.workers:
            worker.stop()
        namespace.close()


@dataclass(frozen=True)
class FirstRound:
    """What the first round's story produced: versions, predictions before and after, the report."""

    base_version: str
    new_version: str
    predicted: list[int]
    repredicted: list[int]
    report: Path


@pytest.fixture(scope="module")
def first_round(stack: Stack) -> FirstRound:
    """Corrections posted to Label Studio lead to a round and fresh predictions (run once per module).

    A fixture, not a test, so that each test below passes alone and in any order (issue 16, 6d):
    the killed-round test starts from the version this round promoted.
    """
    worker = stack.start_worker("fast")
    stack.project = stack.ls.create_project(CONFIG)
    stack.tasks = stack.ls.upload_images(stack.project, stack.images)
    stack.ml_id = stack.ls.connect_ml_backend(stack.project, stack.backend_url)
    base_version = stack.setup_version()
    stack.ls.retrieve_predictions(stack.project, stack.tasks)
    predictions = stack.predictions(base_version)
    assert sorted(predictions) == sorted(stack.tasks), worker.text()[-3000:]

    # The annotator corrects every pre-annotation: the stripes each image really has.
    _, truth = colour_world(N_TASKS, len(LABELS), seed=7, size=64)
    for task, row in zip(stack.tasks, truth, strict=True):
        chosen = [LABELS[c] for c in range(len(LABELS)) if row[c] > 0]
        result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": chosen}}]
        stack.ls.create_annotation(task, result, parent_prediction=predictions[task]["id"])

    stack.ls.sdk.ml.train(id=stack.ml_id)  # START_TRAINING -> TRAIN_ROUND on the train queue
    new_version = stack.wait_for_new_version(base_version, worker)
    report = stack.root / "home" / "models" / "reports" / str(stack.project) / "r0001" / "report.md"

    # Label Studio re-predicts with the new version on the next request.
    stack.ls.retrieve_predictions(stack.project, stack.tasks)
    fresh = stack.predictions(new_version)
    worker.stop()
    return FirstRound(base_version, new_version, sorted(predictions), sorted(fresh), report)


def test_corrections_posted_to_label_studio_lead_to_a_round_and_fresh_predictions(
    stack: Stack, first_round: FirstRound
) -> None:
    assert first_round.base_version.startswith("e2e-tiny-v1+")
    assert first_round.predicted == sorted(stack.tasks)
    checkpoint, config_hash = first_round.new_version.split("+")
    assert checkpoint == f"mkt-p{stack.project}-r0001" and config_hash == first_round.base_version.split("+")[1]
    record = stack.registry.get(checkpoint)
    assert record.parent == "e2e-tiny-v1" and record.round_id == "r0001" and "mAP" in record.metrics
    assert first_round.report.is_file() and "Held-out metrics" in first_round.report.read_text()
    assert first_round.repredicted == sorted(stack.tasks)


def test_a_round_killed_mid_training_leaves_the_version_in_service_and_the_next_round_starts_clean(
    stack: Stack, first_round: FirstRound
) -> None:
    serving = first_round.new_version
    # A slow round: many epochs, so that the kill lands in training.
    slow = stack.start_worker("slow", "train", ASSISTANT_ROUND_STAGE1_EPOCHS="400")
    stack.ls.sdk.ml.train(id=stack.ml_id)
    wait_for("the slow round to start training", lambda: "stage1: training on" in slow.text(), ROUND_TIMEOUT_S, slow)
    time.sleep(2.0)  # well into the 400 epochs
    assert "stage1:" not in slow.text().split("stage1: training on", 1)[1]  # still training
    slow.kill()
    assert stack.setup_version() == serving
    registry = stack.registry
    assert [r.version for r in registry.list_versions(stack.project)] == [serving.split("+")[0]]

    # The dead round's lock expires one heartbeat (3 s) later; a new START_TRAINING runs cleanly.
    time.sleep(4.0)
    fast = stack.start_worker("fast2")
    stack.ls.sdk.ml.train(id=stack.ml_id)
    newer = stack.wait_for_new_version(serving, fast)
    assert newer.split("+")[0] == f"mkt-p{stack.project}-r0002"
    assert registry.get(newer.split("+")[0]).parent == serving.split("+")[0]
    staging = stack.root / "home" / "models" / ".staging" / str(stack.project)
    assert not staging.exists() or not any(staging.iterdir())
