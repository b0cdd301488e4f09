"""Time each step of docs/getting-started.md: the README's local stack, word for word, on this machine.

It runs the README's first block in a fresh directory (free ports, ``HOME`` there: see
``tests/integration/readme_stack.py``), waits until Label Studio, the backend and a worker answer,
runs the second block, then does through Label Studio's API what the page's steps do in its UI:
a project, the photos as a Local Files storage (synced), the model connected, *Retrieve
Predictions* on 10 tasks, ``assistant preannotate`` for the rest, one annotation until ``assistant
status`` counts it, ``assistant doctor --project``, and Ctrl-C. Then it starts the stack again in
the same directory (a later start: no migration) and stops it. Prints one line per step, in
seconds. The photos: the first ``--photos`` of COCO128 from the shared datasets folder when it is
there, else the repository's sample renders.

    .venv/bin/python benchmarks/time_getting_started.py            # about 5 minutes
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.integration.ls_harness import LSClient  # noqa: E402
from tests.integration.processes import healthy  # noqa: E402
from tests.integration.readme_stack import ReadmeStack, readme_blocks  # noqa: E402

COCO = REPO_ROOT.parent / "shared" / "datasets" / "coco128" / "images" / "train2017"


def _until(check: Callable[[], object], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("a step did not finish in time")
        time.sleep(0.5)


def _ready(stack: ReadmeStack) -> bool:
    if not (healthy(stack.ls_url) and healthy(stack.backend_url)):
        return False
    done = stack.assistant("status", "--json", "--timeout", "2")
    return bool(done.stdout and json.loads(done.stdout)["workers"])


def _corrections(stack: ReadmeStack, project: int) -> int:
    report = json.loads(stack.assistant("status", "--json", "--timeout", "1").stdout)
    return next((int(p["new_corrections"] or 0) for p in report["projects"] if p["project"] == project), 0)


def _steps(stack: ReadmeStack, photos: list[Path], times: dict[str, float]) -> None:
    def timed(name: str, started: float) -> None:
        times[name] = round(time.monotonic() - started, 1)
        print(f"{name:32s} {times[name]:7.1f} s", flush=True)

    started = time.monotonic()
    stack.start()
    _until(lambda: healthy(stack.ls_url))
    timed("label studio answers (first start)", started)
    _until(lambda: _ready(stack))
    timed("stack ready (first start)", started)
    started = time.monotonic()
    stack.run_block(readme_blocks()[1])
    timed("status and doctor", started)
    ls = LSClient(stack.ls_url, stack.dotenv["ASSISTANT_LABEL_STUDIO_API_KEY"])
    started = time.monotonic()
    folder = Path(stack.dotenv["IMAGES"]) / "photos"
    for path in photos:
        shutil.copy2(path, folder / path.name)
    readme = (REPO_ROOT / "README.md").read_text().split("## Running it without Docker", 1)[1]
    found = re.search(r"`(<View>.*?</View>)`", readme)
    assert found is not None
    project = ls.create_project(found.group(1), title="photos")
    storage = ls.sdk.import_storage.local.create(
        project=project, path=str(folder), regex_filter=r".*\.(jpe?g|png)", use_blob_urls=True, title="photos"
    )
    assert storage.id is not None
    ls.sdk.import_storage.local.sync(id=storage.id)
    _until(lambda: len(ls.tasks(project)) >= len(photos))
    timed(f"project and {len(photos)} photos", started)
    started = time.monotonic()
    body = {"project": project, "url": stack.backend_url, "title": "assistant", "is_interactive": False}
    ls.http.post("/api/ml", json=body, headers=ls.headers()).raise_for_status()
    timed("connect the model", started)
    ids = [t["id"] for t in ls.tasks(project)]
    started = time.monotonic()
    ls.retrieve_predictions(project, ids[:10])
    timed("retrieve predictions, 10 tasks", started)
    _until(lambda: len(ls.predictions(project=project)) >= 10)
    started = time.monotonic()
    stack.assistant("preannotate", "--project", str(project), timeout=900)
    timed(f"preannotate the other {len(ids) - 10}", started)
    predictions = {p["task"]: p for p in ls.predictions(project=project)}
    tagged = sum(1 for p in predictions.values() if any(i["value"].get("choices") for i in p["result"]))
    print(f"{'predictions with a tag':32s} {tagged} of {len(predictions)}")
    started = time.monotonic()
    result = [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["person"]}}]
    ls.create_annotation(ids[0], result, parent_prediction=predictions[ids[0]]["id"])
    _until(lambda: _corrections(stack, project) > 0)
    timed("annotation counted by status", started)
    started = time.monotonic()
    stack.assistant("doctor", "--project", str(project))
    timed("doctor --project", started)
    started = time.monotonic()
    stack.interrupt()
    _until(stack.all_stopped)
    timed("ctrl-c until all stopped", started)
    ls.close()
    started = time.monotonic()
    stack.start()
    _until(lambda: _ready(stack))
    timed("stack ready (later start)", started)
    stack.interrupt()
    _until(stack.all_stopped)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=30, help="how many photos to import")
    parser.add_argument("--photos-dir", type=Path, default=COCO, help="where the .jpg photos are")
    args = parser.parse_args()
    source = sorted(args.photos_dir.glob("*.jpg")) or sorted((REPO_ROOT / "samples").glob("*.png"))
    photos = source[: args.photos]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="getting-started-") as root:
        stack = ReadmeStack(Path(root) / "run")
        try:
            _steps(stack, photos, times)
        finally:
            stack.kill()
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
