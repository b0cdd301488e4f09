"""``/health``, ``/setup`` and ``/webhook`` stay responsive while many ``/predict`` calls wait on workers.

A real uvicorn server (in a thread, on a loopback port) over a dispatcher that blocks until told:
the waits must sit in ``/predict``'s own threads, never on the event loop nor in the threads the
sync routes need.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.backends._app_fakes import FakeDispatcher, Harness, make_harness
from tests.backends._fixtures import config, payload
from tests.backends.test_app import predict_body, tasks_for

# More blocked /predict calls than predict_concurrency (8): the extra ones queue for a thread.
BLOCKED_PREDICTS = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Harness]]:
    harness = make_harness(tmp_path, dispatcher=FakeDispatcher(block=threading.Event()))
    config_ = uvicorn.Config(harness.app, host="127.0.0.1", port=_free_port(), log_level="warning", access_log=False)
    srv = uvicorn.Server(config_)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{config_.port}", harness
    finally:
        assert harness.dispatcher.block is not None
        harness.dispatcher.block.set()
        srv.should_exit = True
        thread.join(timeout=20)


def test_health_setup_and_webhook_answer_while_predict_waits(server: tuple[str, Harness]) -> None:
    url, harness = server
    block = harness.dispatcher.block
    assert block is not None
    bodies = [predict_body("multilabel", tasks_for("multilabel", 2, first_id=10 * i)) for i in range(BLOCKED_PREDICTS)]
    with ThreadPoolExecutor(BLOCKED_PREDICTS) as pool, httpx.Client(base_url=url, timeout=30) as http:
        pending = [pool.submit(http.post, "/predict", json=body) for body in bodies]
        deadline = time.monotonic() + 10
        while len(harness.dispatcher.jobs) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(harness.dispatcher.jobs) == 8  # predict_concurrency threads are all blocked

        timings: dict[str, list[float]] = {"/health": [], "/setup": [], "/webhook": []}
        event = payload("ls_webhook_annotation_created")
        for i in range(20):
            for path, call in (
                ("/health", lambda: http.get("/health")),
                ("/setup", lambda: http.post("/setup", json={"project": 1, "schema": config("multilabel")})),
                ("/webhook", lambda: http.post("/webhook", json=event)),
            ):
                event["annotation"]["id"] = 500 + i
                start = time.perf_counter()
                resp = call()
                timings[path].append(time.perf_counter() - start)
                assert resp.status_code in (200, 201), resp.text
        assert not any(p.done() for p in pending)  # every /predict was still waiting meanwhile

        block.set()
        results = [p.result() for p in pending]

    assert all(r.status_code == 200 and len(r.json()["results"]) == 2 for r in results)
    for path, values in timings.items():
        # LS allows 1 s (/health, /webhook) and 3 s (/setup); the margin absorbs a loaded CI machine.
        assert statistics.median(values) < 0.1 and max(values) < 1.0, (path, values)
