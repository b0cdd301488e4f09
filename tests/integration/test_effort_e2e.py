"""The effort ledger end to end: real Label Studio, Redis, a Celery worker, ``assistant serve`` and the CLI.

The acceptance of issue 15 against a real Label Studio: annotations with known keeps, removes and
adds reach the effort ledger through LS's own webhook and the workers' counting task, and
``assistant status --json`` then reports exactly those counts per tag; a tag the guard tripped is
absent from new predictions; Label Studio away while counting loses nothing and shows in
``status``; a refit follows after ``ASSISTANT_RECALIBRATION_EVERY`` annotations.

The labeling config fixes what every prediction shows whatever the (random, tiny) model scores:
``model_threshold="0"`` on person, giraffe and outdoor (always shown), ``"1"`` on dog and zebra
(never shown: a random model's probability never reaches 1). An explicit threshold wins over the
break-even point and over the caution of an unmeasured calibration (the tiny checkpoint's is
``default``), but not over the guard. Images are generated here (their content does not matter).

The tests run in file order and build on each other (module-scoped stack).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from state.ledger import open_ledger
from tests.conftest import REPO_ROOT
from tests.integration.ls_harness import LSClient, LSServer
from tests.integration.ls_stack_env import ls_stack_env
from tests.integration.processes import Process, assistant, free_port, healthy, wait_for
from tests.integration.redis_namespace import RedisNamespace
from tests.integration.story import Story
from tests.workers._helpers import save_tiny_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/12"
SHOWN = ["person", "giraffe", "outdoor"]
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" model_max_tags="4">
    <Choice value="person" model_threshold="0"/>
    <Choice value="dog" model_threshold="1"/>
    <Choice value="giraffe" model_threshold="0"/>
    <Choice value="outdoor" model_threshold="0"/>
    <Choice value="zebra" model_threshold="1"/>
  </Choices>
</View>"""
START_TIMEOUT_S = 120.0
COUNT_TIMEOUT_S = 120.0


@dataclass
class Stack:
    ls: LSClient
    server: LSServer
    backend_url: str
    root: Path
    env: dict[str, str]
    backend: Process
    worker: Process
    project: int = 0
    tasks: list[int] = field(default_factory=list)
    expected: dict[str, dict[str, int]] = field(default_factory=dict)

    def cli(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            assistant(*args), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip(), done.stderr
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def effort(self) -> dict[str, Any]:
        report = self.cli("status", "--json", "--timeout", "0.5")
        (entry,) = [p for p in report["projects"] if p["project"] == self.project]
        return {**entry["preannotation"], "alerts": report["alerts"]}

    def counted(self) -> int:
        ledger = open_ledger(None, home=self.root / "home")
        try:
            return ledger.effort.state(self.project).counted
        finally:
            ledger.close()

    def start_worker(self) -> Process:
        self.worker = Process(
            "worker", assistant("worker", "-Q", "predict", "-n", "effort@%h"), self.env, self.root / "worker.log"
        )
        wait_for("the worker to be ready", lambda: " ready." in self.worker.text(), START_TIMEOUT_S, self.worker)
        return self.worker

    def annotate(self, index: int, task: int, *, parent: bool = True) -> list[str]:
        """Keep person, remove giraffe, keep outdoor on even indexes, add dog every third, zebra once.

        Returns:
            The tags the task's prediction showed (what the expected counts were computed from).
        """
        (pred,) = self.ls.predictions(task=task)
        shown_tags = list(pred["result"][0]["value"]["choices"])
        final = ["person"]
        if index % 2 == 0:
            final.append("outdoor")
        if index % 3 == 0:
            final.append("dog")
        if index == 1:
            final.append("zebra")
        for tag in ("person", "giraffe", "outdoor", "dog", "zebra"):
            shown, present = tag in shown_tags, tag in final
            state = "kept" if shown and present else "removed" if shown else "added" if present else None
            if state:
                counts = self.expected.setdefault(tag, {"kept": 0, "removed": 0, "added": 0})
                counts[state] += 1
        result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": final}}]
        self.ls.create_annotation(task, result, parent_prediction=pred["id"] if parent else None)
        return shown_tags


@pytest.fixture(scope="module")
def stack(ls_server: LSServer, ls_client: LSClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    namespace = RedisNamespace(REDIS_URL, "effort")  # skips when Redis is down
    root = tmp_path_factory.mktemp("effort-e2e")
    base = save_tiny_checkpoint(root / "base-model", "effort-tiny-v1")
    port = free_port()
    env = ls_stack_env(root, base, namespace, ls_server, port=str(port), guard_min_shown="4", recalibration_every="8")
    backend = Process(
        "backend", assistant("serve", "--host", "127.0.0.1", "--port", str(port)), env, root / "backend.log"
    )
    url = f"http://127.0.0.1:{port}"
    built = Stack(ls_client, ls_server, url, root, env, backend, backend)
    try:
        wait_for("the backend's /health", lambda: healthy(url), START_TIMEOUT_S, backend)
        built.start_worker()
        yield built
    finally:
        backend.stop()
        built.worker.stop()
        namespace.close()


story = Story()  # the tests below are one project's story (tests/integration/story.py)


@story.step
def test_status_reports_exactly_the_keeps_removes_and_adds_per_tag(stack: Stack) -> None:
    images = []
    for i in range(8):
        path = stack.root / f"img{i}.png"
        Image.new("RGB", (64, 48), (30 * i, 200 - 20 * i, 90)).save(path)
        images.append(path)
    stack.project = stack.ls.create_project(CONFIG)
    stack.tasks = stack.ls.upload_images(stack.project, images)
    stack.ls.connect_ml_backend(stack.project, stack.backend_url)
    stack.ls.retrieve_predictions(stack.project, stack.tasks[:6])

    for index, task in enumerate(stack.tasks[:6]):
        # Task 4 has no parent_prediction: the task's latest prediction before it counts.
        assert sorted(stack.annotate(index, task, parent=index != 4)) == sorted(SHOWN)
    wait_for("6 annotations counted", lambda: stack.counted() == 6, COUNT_TIMEOUT_S, stack.worker, stack.backend)

    effort = stack.effort()
    tags = {t: {k: v[k] for k in ("kept", "removed", "added")} for t, v in effort["tags"].items()}
    assert tags == stack.expected, (tags, stack.expected)
    assert stack.expected["giraffe"] == {"kept": 0, "removed": 6, "added": 0}  # the design, checked
    totals = effort["totals"]
    assert (totals["tasks"], totals["kept"], totals["removed"], totals["added"]) == (6, 9, 9, 3)
    assert totals["edits_per_task"] == pytest.approx(2.0) and totals["scratch_per_task"] == pytest.approx(2.0)
    assert effort["counting"]["pending"] == 0 and effort["alerts"] == []
    calibration = effort["calibration"]
    assert calibration["model"] == "default" and calibration["conservative"] is True
    assert "never measured" in calibration["note"] and calibration["refit"] is None  # 6 < 8 annotations
    # giraffe: kept 0 of 6 showings, interval 0-39% under the break-even 50%: tripped.
    assert [g["tag"] for g in effort["guard"]["tripped"]] == ["giraffe"] and tags["giraffe"]["removed"] == 6
    assert effort["tags"]["giraffe"]["guard"] == "tripped" and effort["tags"]["outdoor"]["guard"] is None


@story.step
def test_a_tag_the_guard_tripped_is_absent_from_new_predictions(stack: Stack) -> None:
    stack.ls.retrieve_predictions(stack.project, stack.tasks[6:])
    for task in stack.tasks[6:]:
        (pred,) = stack.ls.predictions(task=task)
        (item,) = pred["result"]
        assert sorted(item["value"]["choices"]) == ["outdoor", "person"]  # giraffe has model_threshold="0"
        assert item["assistant"]["suppressed"] == ["giraffe"] and "giraffe" in item["assistant"]["scores"]
    report = stack.cli("effort", "--project", str(stack.project), "--json")
    (event,) = report["guard_events"]
    assert event["tag"] == "giraffe" and event["event"] == "tripped" and "break-even 50%" in event["reason"]


@story.step
def test_label_studio_away_while_counting_loses_nothing_and_shows_in_status(stack: Stack) -> None:
    stack.worker.stop()
    for index in (6, 7):  # two webhooks recorded; their count requests wait in the queue
        assert "giraffe" not in stack.annotate(index, stack.tasks[index])
    stack.server.stop()
    try:
        stack.start_worker()
        failing = wait_for(
            "the counting failure in status",
            lambda: e if (e := stack.effort())["counting"]["failures"] else None,
            COUNT_TIMEOUT_S,
            stack.worker,
        )
        assert failing["counting"]["pending"] == 2 and "Cannot reach Label Studio" in failing["counting"]["error"]
        assert any("wait to be counted" in a for a in failing["alerts"])
    finally:
        stack.server.restart()
    wait_for("8 annotations counted", lambda: stack.counted() == 8, COUNT_TIMEOUT_S, stack.worker, stack.backend)

    effort = stack.effort()
    tags = {t: {k: v[k] for k in ("kept", "removed", "added")} for t, v in effort["tags"].items()}
    assert tags == stack.expected, (tags, stack.expected)
    assert effort["counting"]["pending"] == 0 and effort["counting"]["error"] is None and effort["alerts"] == []
    # The 8th annotation of the model in service triggered the first refit: caution is over.
    refit = effort["calibration"]["refit"]
    assert refit["status"] == "fitted" and refit["annotations"] == 8 and effort["calibration"]["conservative"] is False
    metrics = httpx.get(f"{stack.backend_url}/metrics", timeout=10).text
    assert f'assistant_effort_tasks_total{{model_version="{effort["versions"][0]["model_version"]}",' in metrics
    assert f'assistant_effort_pending_events{{project="{stack.project}"}} 0.0' in metrics
    assert f'assistant_effort_refits_total{{project="{stack.project}",status="fitted"}} 1.0' in metrics
