"""Faults during bulk pre-annotation (``assistant preannotate``) with a real Label Studio and real workers.

Each test gets a private Redis, a tiny checkpoint and PNGs behind a loopback HTTP server
(``fault_stack``), and Label Studio from the session's harness.

1. **Label Studio down mid-run.** Label Studio is stopped as soon as the first predictions
   arrive (the workers are publishing), kept down 20 s, and started again on the same port and
   data dir. The publish tasks retry with exponential backoff (the worker's log shows each retry
   and its countdown, within the backoff's bounds), and the run finishes once Label Studio is
   back; should a chunk have exhausted its retries, it is reported failed and a second run
   predicts exactly the rest. Either way every task ends with exactly one prediction for the
   version. A run started while Label Studio is down fails at once with a clear message.
2. **Worker SIGKILL mid-publish.** The only worker is SIGKILLed in the worst window: Label
   Studio has stored a chunk's predictions (a proxy holds its answer) but the worker has not
   acknowledged the message. A second worker starts, Redis hands it the unacknowledged message
   after the visibility timeout, and it finds the chunk's predictions in Label Studio and posts
   none of them again. Every task ends with exactly one prediction.
"""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration.fault_stack import (
    HoldingProxy,
    fault_stack,
    predictions_by_task,
    publish_reports,
    summary_figures,
    wait_for,
)
from tests.integration.ls_harness import LSClient, LSServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LS_DOWN_S = 20.0
RUN_TIMEOUT_S = 420.0
_RETRY = re.compile(r"Task backends\.publish_predictions\[(\w+)\] retry: Retry in (\d+)s: LabelStudioUnavailable")


def _count(ls: LSClient, project: int, version: str) -> int:
    return sum(predictions_by_task(ls, project, version).values())


def test_label_studio_down_mid_run_retries_with_backoff_and_resumes(
    ls_server: LSServer, ls_client: LSClient, tmp_path: Path
) -> None:
    n_tasks, chunk = 24, 4
    with fault_stack(ls_server, ls_client, tmp_path, images=n_tasks) as stack:
        project, task_ids = stack.create_project([f"img{i:03d}.png" for i in range(n_tasks)])
        worker = stack.start_worker("worker")
        run = stack.cli(
            "preannotate-1", "preannotate", "--project", str(project), "--chunk-size", str(chunk),
            "--timeout", str(RUN_TIMEOUT_S),
        )  # fmt: skip
        # Publishing has begun (the publish messages queue behind the predict ones): stop LS now.
        wait_for(
            "the first prediction", lambda: _count(stack.ls, project, stack.version), 180, run, worker, interval=0.2
        )
        ls_server.stop()
        stopped_at = time.monotonic()
        at_stop = None
        try:
            # A run started now cannot even read the project: it says so and exits 1, no traceback.
            refused = stack.cli("preannotate-refused", "preannotate", "--project", str(project))
            assert refused.proc.wait(timeout=120) == 1, refused.text()
            assert "Cannot reach Label Studio" in refused.text() and "Traceback" not in refused.text()
            wait_for(
                "a publish retry",
                lambda: _RETRY.search(worker.text()),
                60,
                worker,
                interval=0.2,
            )
            time.sleep(max(0.0, LS_DOWN_S - (time.monotonic() - stopped_at)))
        finally:
            ls_server.restart()
        at_stop = _count(stack.ls, project, stack.version)
        rc = run.proc.wait(timeout=RUN_TIMEOUT_S + 60)
        output = run.text()
        assert rc == 0, output + worker.text()[-3000:]
        first = summary_figures(output)
        counts = predictions_by_task(stack.ls, project, stack.version)
        assert all(n == 1 for n in counts.values()), counts
        # Every task accounted for by the first run: predicted (before or after the outage) or
        # reported failed.
        assert len(counts) + first["Failed"] == n_tasks, (counts, output)

        # Retries with backoff: countdown n (from 0) is drawn from [0, min(120, 2 * 2**n)].
        retries: dict[str, list[int]] = defaultdict(list)
        for task_id, countdown in _RETRY.findall(worker.text()):
            retries[task_id].append(int(countdown))
        assert retries, worker.text()[-3000:]
        for countdowns in retries.values():
            assert len(countdowns) <= 8
            assert all(c <= min(120, 2 * 2**n) for n, c in enumerate(countdowns)), retries
        assert max(len(c) for c in retries.values()) >= 2, retries  # one chunk waited out the outage

        # Resumable: a second run predicts exactly what the first one could not, posts nothing twice.
        second = stack.cli("preannotate-2", "preannotate", "--project", str(project), "--timeout", "300")
        assert second.proc.wait(timeout=360) == 0, second.text()
        again = summary_figures(second.text())
        assert f"{len(counts)} already predicted" in second.text(), second.text()
        assert again["Predicted"] == n_tasks - len(counts) and again["Failed"] == 0, second.text()
        final = predictions_by_task(stack.ls, project, stack.version)
        assert final == dict.fromkeys(task_ids, 1), final
        sys.stderr.write(
            f"\nLabel Studio down {LS_DOWN_S:.0f} s mid-run: {at_stop} of {n_tasks} predicted before the restart, "
            f"{len(counts)} after the first run ({first['Failed']} reported failed), {len(final)} after the second; "
            f"retries per publish task: {sorted(len(c) for c in retries.values())}, max countdown "
            f"{max(max(c) for c in retries.values())} s\n"
        )


def test_sigkill_after_label_studio_stored_a_chunk_posts_nothing_twice(
    ls_server: LSServer, ls_client: LSClient, tmp_path: Path
) -> None:
    n_tasks, chunk = 48, 16
    # Redis hands a dead worker's unacknowledged message to another after 15 s (far above the
    # ~3 s a chunk takes here, so a live worker's message is never handed out twice).
    transport = '{"unacked_restore_interval": 1, "unacked_restore_throttle": 1}'
    proxy = HoldingProxy(ls_server.url).start()
    try:
        with fault_stack(
            ls_server,
            ls_client,
            tmp_path,
            images=n_tasks,
            visibility_timeout_s="15",
            broker_transport_options=transport,
        ) as stack:
            project, task_ids = stack.create_project([f"img{i:03d}.png" for i in range(n_tasks)])
            first = stack.start_worker("w1", label_studio_url=proxy.url)
            proxy.hold.set()
            run = stack.cli(
                "preannotate", "preannotate", "--project", str(project), "--chunk-size", str(chunk),
                "--timeout", str(RUN_TIMEOUT_S),
            )  # fmt: skip
            # Label Studio stored w1's first chunk; its answer is held, so w1 has not acknowledged.
            wait_for("w1's first chunk in Label Studio", proxy.stored.is_set, 180, run, first, interval=0.05)
            first.kill()
            proxy.release()
            posted_by_first = _count(stack.ls, project, stack.version)
            assert posted_by_first == chunk, posted_by_first

            second = stack.start_worker("w2", label_studio_url=proxy.url)
            rc = run.proc.wait(timeout=RUN_TIMEOUT_S + 60)
            assert rc == 0, run.text() + second.text()[-3000:]
            counts = predictions_by_task(stack.ls, project, stack.version)
            assert counts == dict.fromkeys(task_ids, 1), counts

            # w2 ran the redelivered message: it found the chunk in Label Studio and posted none of it.
            reports = publish_reports(second.text())
            assert sum(r["skipped"] for r in reports) == chunk, reports
            assert sum(r["posted"] for r in reports) == n_tasks - chunk, reports
            assert all(r["failed"] == 0 for r in reports)
            received = set(re.findall(r"Task backends\.publish_predictions\[(\w+)\] received", first.text()))
            done_by_first = set(re.findall(r"Task backends\.publish_predictions\[(\w+)\] succeeded", first.text()))
            (redelivered,) = received - done_by_first
            assert f"Task backends.publish_predictions[{redelivered}] succeeded" in second.text()
            summary = summary_figures(run.text())
            assert (summary["Predicted"], summary["Skipped: already predicted"]) == (n_tasks - chunk, chunk)
            sys.stderr.write(
                f"\nSIGKILL after LS stored a chunk: {posted_by_first} predictions stored, message not acknowledged; "
                f"w2 skipped {chunk}, posted {n_tasks - chunk}; duplicates: 0\n"
            )
    finally:
        proxy.stop()
