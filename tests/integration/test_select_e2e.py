"""End to end: `assistant select` and `assistant review` against a real Label Studio and a real worker.

The stack (module scope; every process it starts is stopped at the end, even when a test fails):
Label Studio from the harness; Redis DB 10 with a key prefix of its own (only those keys are
deleted afterwards); an `assistant worker` subprocess on the predict queue with a tiny random MKT
checkpoint as the base model. The CLI runs as a subprocess, as a user would run it.

What is proven: the chosen tasks come first, in the chosen order, in the Data Manager tab the
command saves, and they are what Label Studio's "Label All Tasks" serves next from that tab; a
second selection replaces the first (same tab, old ranks cleared); the review tab lists the
flagged annotated tasks worst first.

The project and both selections are made by a module fixture (``selections``), not by a test, so
each test passes alone and in any order (issue 16, 6d).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.integration.ls_harness import LSClient, LSServer
from tests.integration.ls_stack_env import ls_stack_env
from tests.integration.processes import Process, assistant, wait_for
from tests.integration.redis_namespace import RedisNamespace
from tests.workers._helpers import save_tiny_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/10"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" showInline="true">
    <Choice value="person"/>
    <Choice value="dog"/>
    <Choice value="giraffe"/>
    <Choice value="outdoor"/>
  </Choices>
</View>"""
START_TIMEOUT_S = 120.0


@dataclass
class Stack:
    ls: LSClient
    server: LSServer
    env: dict[str, str]
    worker: Process
    root: Path
    project: int = 0
    tasks: tuple[int, ...] = ()
    annotated: tuple[int, ...] = ()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            assistant(*args),
            cwd=REPO_ROOT,
            env={**self.env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr + self.worker.text()[-3000:]
        return done

    def view(self, title: str) -> int:
        views = [v for v in self.ls.sdk.views.list(project=self.project) if (v.data or {}).get("title") == title]
        assert len(views) == 1, [v.data for v in views]
        assert views[0].id is not None
        return int(views[0].id)

    def view_tasks(self, view: int) -> list[int]:
        resp = self.ls.http.get(
            "/api/tasks/", params={"project": self.project, "view": view, "page_size": 100}, headers=self.ls.headers()
        )
        resp.raise_for_status()
        body = resp.json()
        return [int(t["id"]) for t in (body["tasks"] if isinstance(body, dict) else body)]

    def next_task(self, view: int) -> int:
        resp = self.ls.http.get(f"/api/projects/{self.project}/next", params={"view": view}, headers=self.ls.headers())
        resp.raise_for_status()
        return int(resp.json()["id"])


@pytest.fixture(scope="module")
def stack(
    ls_server: LSServer, ls_client: LSClient, shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    namespace = RedisNamespace(REDIS_URL, "select-e2e")  # skips when Redis is down
    root = tmp_path_factory.mktemp("select-e2e")
    # A slope of 10 spreads a random model's cosine scores over (0, 1), so uncertainties differ.
    base = save_tiny_checkpoint(root / "base-model", "select-e2e-v1")
    env = ls_stack_env(root, base, namespace, ls_server)
    worker = Process("worker", assistant("worker", "-Q", "predict", "-n", "select@%h"), env, root / "worker.log")
    try:
        wait_for("the worker to be ready", lambda: " ready." in worker.text(), START_TIMEOUT_S, worker)
        yield Stack(ls_client, ls_server, env, worker, root)
    finally:
        worker.stop()
        namespace.close()


def _choices(labels: list[str]) -> list[dict[str, Any]]:
    return [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": labels}}]


@dataclass
class Selection:
    """What one `assistant select` printed and left in Label Studio, seen right after it ran."""

    stdout: str
    chosen: list[int]
    view: int
    view_tasks: list[int]
    next_task: int
    ranks: dict[int, Any]


def _select(stack: Stack, name: str, *args: str) -> Selection:
    out = stack.root / f"{name}.json"
    done = stack.cli("select", "--project", str(stack.project), *args, "--json", str(out))
    chosen = [c["task_id"] for c in json.loads(out.read_text())["chosen"]]
    view = stack.view("Assistant: label next")
    ranks = {t["id"]: t["data"].get("assistant_rank") for t in stack.ls.tasks(stack.project)}
    return Selection(done.stdout, chosen, view, stack.view_tasks(view), stack.next_task(view), ranks)


@pytest.fixture(scope="module")
def selections(stack: Stack, shared_datasets: Path) -> tuple[Selection, Selection]:
    """The project, two annotations, and two selections in a row (the second replaces the first).

    A fixture rather than the first test, so that every test passes alone and in any order.
    """
    photos = sorted((shared_datasets / "coco128" / "images" / "train2017").glob("*.jpg"))[:8]
    stack.project = stack.ls.create_project(CONFIG)
    stack.tasks = tuple(stack.ls.upload_images(stack.project, photos))
    stack.annotated = stack.tasks[:2]
    for task in stack.annotated:
        stack.ls.create_annotation(task, _choices(["person", "outdoor"]))
    first = _select(stack, "select", "--k", "3", "--strategy", "uncertainty")
    second = _select(stack, "select2", "--k", "2", "--strategy", "hybrid")
    return first, second


def test_select_puts_the_chosen_tasks_first_in_a_saved_view(
    stack: Stack, selections: tuple[Selection, Selection]
) -> None:
    first, second = selections
    assert len(first.chosen) == 3 and not set(first.chosen) & set(stack.annotated), first.stdout
    assert "Assistant: label next" in first.stdout and "borderline" in first.stdout
    assert first.view_tasks == first.chosen  # exactly the chosen tasks, in the chosen order
    assert first.next_task == first.chosen[0]  # what "Label All Tasks" opens first from the tab
    assert [first.ranks[t] for t in first.chosen] == [1, 2, 3]

    # A second selection replaces the first: same tab, the earlier ranks are gone.
    assert second.view == first.view
    assert second.view_tasks == second.chosen
    assert sum(r is not None for r in second.ranks.values()) == 2
    # The image URL and every other data key survive the rank updates.
    assert all(t["data"]["image"].startswith("/data/upload/") for t in stack.ls.tasks(stack.project))


def test_dry_run_changes_nothing(stack: Stack, selections: tuple[Selection, Selection]) -> None:
    before = {t["id"]: t["data"] for t in stack.ls.tasks(stack.project)}
    done = stack.cli("select", "--project", str(stack.project), "--k", "4", "--strategy", "random", "--dry-run")
    assert "Dry run" in done.stdout
    assert {t["id"]: t["data"] for t in stack.ls.tasks(stack.project)} == before


def test_review_lists_the_flagged_annotated_tasks_worst_first(
    stack: Stack, selections: tuple[Selection, Selection]
) -> None:
    out = stack.root / "review.json"
    done = stack.cli("review", "--project", str(stack.project), "--k", "2", "--json", str(out))
    flagged = json.loads(out.read_text())["flagged"]
    assert [f["task"] for f in flagged] and {f["task"] for f in flagged} <= set(stack.annotated), done.stdout
    # Ranked by the worst tag's quality (assistant/label_quality.py), the image's quality alongside.
    assert [f["worst_tag_quality"] for f in flagged] == sorted(f["worst_tag_quality"] for f in flagged)
    assert all(0.0 <= f["worst_tag_quality"] <= f["quality"] + 1e-9 <= 1.0 + 1e-9 for f in flagged)
    view = stack.view("Assistant: review")
    assert stack.view_tasks(view) == [f["task"] for f in flagged]
    # The selection tab is untouched by the review: the second selection's two tasks.
    assert stack.view_tasks(stack.view("Assistant: label next")) == selections[1].chosen


def test_the_worker_answered_every_request(stack: Stack, selections: tuple[Selection, Selection]) -> None:
    """The selections' pool scoring ran on the worker (the fixture made them, whatever ran before)."""
    log = stack.worker.text()
    assert "score_pool" in log and "succeeded" in log
    with httpx.Client() as http:  # Label Studio is still healthy after the pushes
        assert http.get(f"{stack.server.url}/health").status_code == 200
