"""README.md's "Running it without Docker", word for word, against the pinned Label Studio.

The test runs the section's first code block (ports line changed, nothing else: see
``readme_stack``), which writes ``.env`` and starts ``make stack``; then does in Label Studio, over
its API, what the numbered steps tell a reader to do in its UI: create the project with the
README's example config, add a Local Files storage on the ``IMAGES`` folder and sync it, connect the
model (``POST /api/ml``, what the *Connect Model* dialog sends), retrieve predictions, annotate.
The correction must then show in ``assistant status --json`` run from the same directory, with no
setting but its ``.env``: which needs the project webhook that Label Studio creates only when its
SSRF protection lets it, so the test fails when the webhook is missing. The second code block
(``status``, ``doctor``) runs as a second terminal would, and Ctrl-C must stop everything.

About three minutes on 2 shared cores: Label Studio migrates a fresh database at its first start.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.ls_harness import LSClient, find_ls_venv
from tests.integration.processes import REPO_ROOT, healthy
from tests.integration.readme_stack import ReadmeStack, readme_blocks, wait_until
from tests.integration.story import Story

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Label Studio's first start migrates a new database (~45 s idle, minutes on a loaded machine).
START_TIMEOUT_S = 480.0
SAMPLES = sorted((REPO_ROOT / "samples").glob("world_*.png"))[:4]


def _readme_config() -> str:
    """The labeling config the README's step 1 shows."""
    section = (REPO_ROOT / "README.md").read_text().split("## Running it without Docker", 1)[1]
    found = re.search(r"`(<View>.*?</View>)`", section)
    assert found, "the README's step 1 shows no labeling config"
    return found.group(1)


def _status(stack: ReadmeStack) -> dict[str, Any]:
    done = stack.assistant("status", "--json", "--timeout", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _corrections(stack: ReadmeStack, project: int) -> int:
    for entry in _status(stack)["projects"]:
        if entry["project"] == project:
            return int(entry["new_corrections"] or 0)
    return 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeStack]:
    if find_ls_venv() is None:
        pytest.skip("Label Studio venv not found: set ASSISTANT_LS_VENV or run `make ls-venv`")
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine (the README's stack starts its own)")
    if not (REPO_ROOT / ".venv" / "bin" / "honcho").exists():
        pytest.skip("no honcho in .venv: `make install`")
    readme = ReadmeStack(tmp_path_factory.mktemp("readme-stack"))
    readme.start()
    try:
        wait_until("Label Studio", lambda: healthy(readme.ls_url), START_TIMEOUT_S, readme)
        wait_until("the backend", lambda: healthy(readme.backend_url), START_TIMEOUT_S, readme)
        wait_until("a worker", lambda: _status(readme)["workers"], START_TIMEOUT_S, readme, interval=3.0)
        yield readme
    finally:
        readme.kill()


@pytest.fixture(scope="module")
def ls(stack: ReadmeStack) -> Iterator[LSClient]:
    with LSClient(stack.ls_url, stack.dotenv["ASSISTANT_LABEL_STUDIO_API_KEY"]) as client:
        yield client


@pytest.fixture(scope="module")
def project(stack: ReadmeStack, ls: LSClient) -> int:
    """Steps 1-3 of the README: the project, its Local Files storage (synced), the model connected."""
    root = Path(stack.dotenv["IMAGES"])
    assert root == stack.home / "images"  # IMAGES="$HOME/images", as written
    images = root / "photos"  # the folder the first block made, which step 2 names
    assert images.is_dir()
    for path in SAMPLES:
        shutil.copy2(path, images / path.name)
    pid = ls.create_project(_readme_config(), title="readme")
    storage = ls.sdk.import_storage.local.create(
        project=pid, path=str(images), regex_filter=r".*\.(jpe?g|png)", use_blob_urls=True, title="images"
    )
    assert storage.id is not None
    ls.sdk.import_storage.local.sync(id=storage.id)
    deadline = time.monotonic() + 60
    while len(ls.tasks(pid)) < len(SAMPLES) and time.monotonic() < deadline:
        time.sleep(0.5)
    # What the Connect Model dialog posts; a 403 here is Label Studio refusing the webhook.
    answer = ls.http.post(
        "/api/ml",
        json={"project": pid, "url": stack.backend_url, "title": "assistant", "is_interactive": False},
        headers=ls.headers(),
    )
    assert answer.status_code == 201, answer.text
    return pid


story = Story()  # the tests below are one stack's story, Ctrl-C last (tests/integration/story.py)


@story.step
def test_the_second_block_runs_from_another_shell_on_the_env_file(stack: ReadmeStack) -> None:
    done = stack.run_block(readme_blocks()[1])

    assert done.returncode == 0, done.stdout + done.stderr
    # status and doctor say which settings they used: the .env of this directory.
    assert f"Settings from {stack.repo / '.env'}" in done.stdout.replace("\n", "")
    assert f"read env file {stack.repo / '.env'}" in done.stdout.replace("\n", " ")
    assert "offline demo model" in done.stdout  # the bundled model says what it is
    assert "FAIL" not in done.stdout


@story.step
def test_local_files_become_tasks_the_workers_read_from_disk(stack: ReadmeStack, ls: LSClient, project: int) -> None:
    tasks = ls.tasks(project)

    # A synced storage writes absolute URLs on Label Studio's host (LS 1.23 with --host).
    expected = sorted(f"{stack.ls_url}/data/local-files/?d=photos/{p.name}" for p in SAMPLES)
    assert sorted(t["data"]["image"] for t in tasks) == expected
    doctor = stack.assistant("doctor", "--project", str(project), "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["image"]["status"] == "ok", checks["image"]
    assert checks["image"]["data"]["local"] is True  # ASSISTANT_LABEL_STUDIO_LOCAL_FILES_ROOT at work


@story.step
def test_connecting_the_model_creates_the_webhook(stack: ReadmeStack, ls: LSClient, project: int) -> None:
    hooks = ls.http.get("/api/webhooks/", params={"project": project}, headers=ls.headers()).json()

    assert f"{stack.backend_url}/webhook" in [h["url"] for h in hooks], hooks


@story.step
def test_a_correction_reaches_status_through_the_webhook(stack: ReadmeStack, ls: LSClient, project: int) -> None:
    task_ids = [t["id"] for t in ls.tasks(project)]
    ls.retrieve_predictions(project, task_ids)
    deadline = time.monotonic() + 120
    while len(ls.predictions(project=project)) < len(task_ids) and time.monotonic() < deadline:
        time.sleep(1)
    predictions = {p["task"]: p for p in ls.predictions(project=project)}
    assert set(predictions) == set(task_ids), stack.output()
    before = _corrections(stack, project)

    task = task_ids[0]
    result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]
    ls.create_annotation(task, result, parent_prediction=predictions[task]["id"])

    wait_until("the correction in `assistant status`", lambda: _corrections(stack, project) > before, 60, stack)
    doctor = stack.assistant("doctor", "--project", str(project))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


@story.step
def test_without_the_webhook_doctor_fails_and_names_the_fix(stack: ReadmeStack, ls: LSClient, project: int) -> None:
    hooks = ls.http.get("/api/webhooks/", params={"project": project}, headers=ls.headers()).json()
    for hook in hooks:
        ls.http.delete(f"/api/webhooks/{hook['id']}/", headers=ls.headers()).raise_for_status()

    doctor = stack.assistant("doctor", "--project", str(project), "--json")

    assert doctor.returncode == 1
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["webhook"]["status"] == "fail"
    assert f"{stack.backend_url}/webhook" in checks["webhook"]["detail"]
    assert "SSRF_PROTECTION_ENABLED" in checks["webhook"]["fix"]


@story.step
def test_ctrl_c_stops_the_whole_stack_and_the_logs_stay(stack: ReadmeStack) -> None:
    status = stack.interrupt()

    assert status is not None
    deadline = time.monotonic() + 30
    while not stack.all_stopped() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stack.all_stopped(), stack.output()
    logs = {p.name for p in (stack.repo / "var" / "logs").glob("*.log")}
    assert {"label-studio.log", "worker.log", "backend.log", "redis.log"} <= logs
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.ls_url}/health", timeout=1)
