"""Soak: bulk pre-annotation of 10,000 Label Studio tasks through real processes, counting lost tasks.

Everything runs on loopback and is started and stopped here:

- Label Studio from ``.venv-ls`` (the end-to-end harness: a copy of its migrated template, a free
  port, its own data dir);
- a private ``redis-server`` on a free port, without persistence (``.ci/run``'s flags);
- ``--workers`` real ``assistant worker -Q predict`` processes serving a tiny random checkpoint
  (test-tiny, 32 px: what is measured is the pipeline around the model, not the model);
- ``--tasks`` distinct small PNGs as Label Studio local files (``/data/local-files/?d=soak/...``),
  which the workers read from disk (``ASSISTANT_LABEL_STUDIO_LOCAL_FILES_ROOT``), as with storage
  mounted on the workers.

It imports the tasks, runs ``assistant preannotate --project P`` once over all of them (the
real CLI: plan, queue chunked ``predict → publish_predictions`` chains, follow), then reads every
prediction of the project back through the API and prints: tasks, predictions for the run's
model version, **lost** (tasks without one), **duplicates** (predictions beyond one per task),
tasks the CLI reported failed, wall time of the run and tasks/s. Projects of up to
``backends.bulk.BULK_IMPORT_MAX_TASKS`` tasks get a chunk's predictions in one request, larger
ones one POST per prediction (so 10,000 tasks measure the POST path). Progress (from the workers'
publish reports) is printed every ``--progress-s`` seconds. The run is bounded by ``--timeout``.
Exit status 1 when a task was lost or duplicated.

    nice -n 5 .venv/bin/python benchmarks/soak_preannotate.py                 # 10,000 tasks
    nice -n 5 .venv/bin/python benchmarks/soak_preannotate.py --tasks 500     # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backends.bulk import BULK_IMPORT_MAX_TASKS  # noqa: E402
from tests.integration.fault_stack import BASE_VERSION, CONFIG, PrivateRedis, publish_reports, summary_figures  # noqa: E402
from tests.integration.ls_harness import LSClient, running_server  # noqa: E402
from tests.integration.processes import Process, assistant, assistant_env, wait_for  # noqa: E402
from tests.workers._helpers import save_tiny_checkpoint  # noqa: E402

console = Console()
IMPORT_BATCH = 1000


def write_images(directory: Path, n: int) -> list[str]:
    """``n`` distinct 32x32 PNGs (no two share a feature-cache entry); their file names."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(directory / name)
        names.append(name)
    return names


def import_tasks(ls: LSClient, project: int, names: list[str]) -> list[int]:
    """One local-files task per image, imported in batches of :data:`IMPORT_BATCH`."""
    from label_studio_sdk.types import ImportApiRequest

    ids: list[int] = []
    for start in range(0, len(names), IMPORT_BATCH):
        chunk = names[start : start + IMPORT_BATCH]
        batch = [ImportApiRequest(data={"image": f"/data/local-files/?d=soak/{name}"}) for name in chunk]
        answer = ls.sdk.projects.import_tasks(id=project, request=batch, return_task_ids=True)
        ids.extend(getattr(answer, "task_ids", None) or [])
    if len(ids) != len(names):
        raise RuntimeError(f"imported {len(ids)} tasks of {len(names)}")
    return ids


def follow(run: Process, workers: list[Process], total: int, timeout: float, every: float) -> float:
    """Wait for the CLI to exit, printing the workers' published count; returns the wall time."""
    started = time.monotonic()
    last = started
    while run.proc.poll() is None:
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"the run took longer than {timeout:.0f} s; see {run.log}")
        for worker in workers:
            worker.check_alive()
        if now - last >= every:
            last = now
            done = sum(r["posted"] + r["skipped"] + r["failed"] for w in workers for r in publish_reports(w.text()))
            elapsed = now - started
            console.print(f"[{elapsed:6.0f} s] published {done:,}/{total:,} tasks ({done / elapsed:.1f} tasks/s)")
        time.sleep(1.0)
    return time.monotonic() - started


def _ready(worker: Process) -> Callable[[], bool]:
    return lambda: " ready." in worker.text()


def count(ls: LSClient, project: int, task_ids: list[int], version: str) -> dict[str, int]:
    """Predictions per task for ``version``, read back through the API."""
    per_task: Counter[int] = Counter()
    other = 0
    for pred in ls.predictions(project=project):
        if pred["model_version"] == version:
            per_task[int(pred["task"])] += 1
        else:
            other += 1
    return {
        "predictions": sum(per_task.values()),
        "lost": sum(1 for t in task_ids if per_task[t] == 0),
        "duplicates": sum(n - 1 for n in per_task.values() if n > 1),
        "foreign": len(set(per_task) - set(task_ids)) + other,
    }


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"tasks": args.tasks}
    started = time.monotonic()
    with running_server(work / "label-studio") as server:
        figures["ls_start_s"] = server.start_seconds
        console.print(f"Label Studio {server.version} at {server.url} ({server.start_seconds:.1f} s)")
        redis_server = PrivateRedis(work / "redis").start()
        workers: list[Process] = []
        try:
            console.print(f"writing {args.tasks:,} images and a tiny checkpoint ...")
            names = write_images(server.document_root / "soak", args.tasks)
            base = save_tiny_checkpoint(work / "base-model", BASE_VERSION)
            env = assistant_env(
                home=work / "home",
                base_model=base,
                broker_url=redis_server.url(0),
                prefix=f"soak-{uuid.uuid4().hex[:8]}:",
                ls_url=server.url,
                ls_key=server.api_key,
                label_studio_local_files_root=str(server.document_root),
                batch_size=str(args.batch_size),
                predict_chunk_size=str(args.chunk_size),
            )
            for i in range(args.workers):
                cmd = assistant("worker", "-Q", "predict", "-n", f"soak{i}@%h", "-l", "INFO")
                workers.append(Process(f"worker{i}", cmd, env, work / f"worker{i}.log"))
            for worker in workers:
                wait_for(f"{worker.name} to be ready", _ready(worker), 180, worker)
            with LSClient.for_server(server) as ls:
                project = ls.create_project(CONFIG, title="soak")
                t0 = time.monotonic()
                task_ids = import_tasks(ls, project, names)
                figures["import_s"] = time.monotonic() - t0
                console.print(f"imported {len(task_ids):,} tasks into project {project} in {figures['import_s']:.1f} s")

                run = Process("preannotate", assistant("preannotate", "--project", str(project)), env, work / "run.log")
                try:
                    figures["wall_s"] = follow(run, workers, args.tasks, args.timeout, args.progress_s)
                finally:
                    run.stop()
                figures["rc"] = run.proc.returncode
                output = run.text()
                console.print(output[output.find("Project ") :].strip() or output[-3000:])
                figures["cli"] = summary_figures(output) if figures["rc"] == 0 else {}
                from studio.config import parse_label_config

                version = parse_label_config(CONFIG).model_version(BASE_VERSION)
                t0 = time.monotonic()
                figures.update(count(ls, project, task_ids, version))
                figures["count_s"] = time.monotonic() - t0
        finally:
            for worker in workers:
                worker.stop()
            redis_server.stop()
    figures["total_s"] = time.monotonic() - started
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to import and pre-annotate")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (solo pool each)")
    parser.add_argument("--chunk-size", type=int, default=32, help="images per worker message")
    parser.add_argument("--batch-size", type=int, default=32, help="the model's batch size in the worker")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up on the run after this many seconds")
    parser.add_argument("--progress-s", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder, kept (default: a temp dir)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="soak-preannotate-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = soak(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    wall = figures.get("wall_s", 0.0)
    cli = figures.get("cli") or {}
    table = Table(title=f"Bulk pre-annotation soak ({args.workers} worker(s), chunks of {args.chunk_size}, CPU)")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    rows = [
        ("tasks", f"{figures['tasks']:,}"),
        ("predictions (run's version)", f"{figures.get('predictions', 0):,}"),
        ("lost (tasks without a prediction)", f"{figures.get('lost', '?')}"),
        ("duplicates (predictions beyond one per task)", f"{figures.get('duplicates', '?')}"),
        ("reported failed by the CLI", f"{cli.get('Failed', '?')}"),
        ("preannotate exit status", f"{figures.get('rc')}"),
        (
            "how predictions were stored",
            "one import per chunk" if args.tasks <= BULK_IMPORT_MAX_TASKS else "one POST per prediction",
        ),
        ("wall time of the run", f"{wall:,.1f} s"),
        ("throughput", f"{figures['tasks'] / wall:,.1f} tasks/s" if wall else "-"),
        ("import of the tasks", f"{figures.get('import_s', 0):,.1f} s"),
        ("counting through the API", f"{figures.get('count_s', 0):,.1f} s"),
        ("everything (start to stop)", f"{figures['total_s']:,.1f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    ok = figures.get("rc") == 0 and figures.get("lost") == 0 and figures.get("duplicates") == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
