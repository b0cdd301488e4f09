"""Worker metrics: counters and task timing, queue depth from the broker, JSON logs with ids.

Unit tests record into private registries; the integration tests use the real Redis (DB 13, a key
prefix of their own) and a real prefork `assistant worker` whose two children's samples must reach
the one exporter of their parent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from state.contracts import EMBED, PREDICT, TRAIN_ROUND, EmbedRequest, ImageRef, PredictRequest
from state.logs import JsonFormatter, TaskContextFilter
from state.metrics import (
    QueueDepthCollector,
    QueueDepths,
    TaskTimer,
    WorkerMetrics,
    broker_redis,
    connect_task_signals,
    queue_depths,
    queue_keys,
    worker_metrics,
)
from tests.conftest import REPO_ROOT
from tests.workers._helpers import ImageServer, write_images
from workers import pipeline
from workers.runtime import Runtime

REDIS_URL = "redis://127.0.0.1:6379/13"
LABELS = ["cat", "dog", "snow"]


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# --- counters and timing ----------------------------------------------------------------------------
def test_image_counters_and_their_series_from_the_start() -> None:
    metrics = WorkerMetrics()
    text = generate_latest(metrics.registry).decode()
    # Zero series exist before any task, so rates and the hit rate are defined from the start.
    assert f'assistant_worker_images_total{{outcome="cached",task="{PREDICT}"}} 0.0' in text

    metrics.record_images(PREDICT, cached=3, computed=5, failures=["not_found", "corrupt", "not_found"])
    r = metrics.registry
    assert _value(r, "assistant_worker_images_total", task=PREDICT, outcome="cached") == 3
    assert _value(r, "assistant_worker_images_total", task=PREDICT, outcome="computed") == 5
    assert _value(r, "assistant_worker_images_total", task=PREDICT, outcome="failed") == 3
    assert _value(r, "assistant_worker_image_failures_total", task=PREDICT, reason="not_found") == 2
    assert _value(r, "assistant_worker_image_failures_total", task=PREDICT, reason="corrupt") == 1


def test_task_timer_records_duration_state_and_round_outcomes() -> None:
    metrics = WorkerMetrics()
    timer = TaskTimer(lambda: metrics)
    predict = SimpleNamespace(name=PREDICT)
    timer.prerun(task_id="a", task=predict)
    time.sleep(0.02)
    timer.postrun(task_id="a", task=predict, state="SUCCESS", retval={}, kwargs={})
    timer.prerun(task_id="b", task=predict)
    timer.postrun(task_id="b", task=predict, state="FAILURE", retval=RuntimeError("x"), kwargs={})
    r = metrics.registry
    assert _value(r, "assistant_worker_task_seconds_count", task=PREDICT, state="success") == 1
    assert _value(r, "assistant_worker_task_seconds_sum", task=PREDICT, state="success") >= 0.02
    assert _value(r, "assistant_worker_task_seconds_count", task=PREDICT, state="failure") == 1

    rounds = SimpleNamespace(name=TRAIN_ROUND)
    for task_id, state, retval, trigger in (
        ("r1", "SUCCESS", {"status": "promoted"}, "threshold"),
        ("r2", "SUCCESS", {"status": "kept"}, "manual"),
        ("r3", "FAILURE", ValueError("boom"), "schedule"),
    ):
        timer.prerun(task_id=task_id, task=rounds)
        timer.postrun(task_id=task_id, task=rounds, state=state, retval=retval, kwargs={"trigger": trigger})
    assert _value(r, "assistant_rounds_total", trigger="threshold", status="promoted") == 1
    assert _value(r, "assistant_rounds_total", trigger="manual", status="kept") == 1
    assert _value(r, "assistant_rounds_total", trigger="schedule", status="failed") == 1


def test_a_metrics_failure_never_fails_the_task(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> WorkerMetrics:
        raise RuntimeError("registry gone")

    timer = TaskTimer(broken)
    with caplog.at_level(logging.ERROR, logger="state.metrics"):
        timer.postrun(task_id="x", task=SimpleNamespace(name=PREDICT), state="SUCCESS")
    assert "could not record the metrics" in caplog.text


def test_connecting_the_signals_twice_connects_them_once() -> None:
    from celery.signals import task_postrun, task_prerun

    connect_task_signals()
    counts = (len(task_prerun.receivers), len(task_postrun.receivers))
    connect_task_signals()
    assert (len(task_prerun.receivers), len(task_postrun.receivers)) == counts


def test_the_pipeline_counts_cache_hits_and_failures(runtime: Runtime, image_dir: Path) -> None:
    registry = worker_metrics().registry

    def snapshot(task: str) -> dict[str, float]:
        counts = {
            o: _value(registry, "assistant_worker_images_total", task=task, outcome=o) for o in ("cached", "computed")
        }
        counts["failed"] = _value(registry, "assistant_worker_images_total", task=task, outcome="failed")
        counts["not_found"] = _value(registry, "assistant_worker_image_failures_total", task=task, reason="not_found")
        return counts

    refs = [ImageRef(key=p.stem, url=str(p)) for p in sorted(image_dir.glob("*.png"))]
    refs.append(ImageRef(key="missing", url=str(image_dir / "nope.png")))
    request = PredictRequest(labels=LABELS, images=refs)
    before = snapshot(PREDICT)
    pipeline.predict(runtime, request)
    first = snapshot(PREDICT)
    pipeline.predict(runtime, request)
    second = snapshot(PREDICT)
    assert {k: first[k] - before[k] for k in first} == {"cached": 0, "computed": 6, "failed": 1, "not_found": 1}
    # The second run is served from the feature cache: the hit rate of that run is 100 %.
    assert {k: second[k] - first[k] for k in first} == {"cached": 6, "computed": 0, "failed": 1, "not_found": 1}

    embed_before = snapshot(EMBED)
    pipeline.embed(runtime, EmbedRequest(images=refs[:2]))
    assert snapshot(EMBED)["cached"] - embed_before["cached"] == 2


# --- queue depth --------------------------------------------------------------------------------------
def test_queue_keys_follow_kombus_redis_layout() -> None:
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    keys = queue_keys("predict", "pfx:")
    assert keys[0] == "pfx:predict"
    assert keys[1:] == [f"pfx:predict{Channel.sep}{step}" for step in PRIORITY_STEPS if step]
    import state.metrics as m

    assert m._UNACKED_KEY == Channel.unacked_key


def test_the_collector_exports_depths_and_survives_a_broker_outage(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(lambda: QueueDepths(waiting={"predict": 4, "train": 1}, unacked=2)))
    assert registry.get_sample_value("assistant_queue_messages", {"queue": "predict"}) == 4
    assert registry.get_sample_value("assistant_queue_messages", {"queue": "train"}) == 1
    assert registry.get_sample_value("assistant_queue_unacked_messages") == 2
    assert registry.get_sample_value("assistant_broker_up") == 1

    def down() -> QueueDepths:
        raise ConnectionError("refused")

    broken = CollectorRegistry()
    broken.register(QueueDepthCollector(down))
    with caplog.at_level(logging.WARNING, logger="state.metrics"):
        assert broken.get_sample_value("assistant_broker_up") == 0
    assert broken.get_sample_value("assistant_queue_messages", {"queue": "predict"}) is None
    assert "queue depths unavailable" in caplog.text


def test_the_backend_exports_queue_depth() -> None:
    from backends.metrics import BackendMetrics

    metrics = BackendMetrics(queues=lambda: QueueDepths(waiting={"predict": 7}, unacked=0))
    families = {f.name for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert {"assistant_queue_messages", "assistant_queue_unacked_messages", "assistant_broker_up"} <= families


def test_no_client_for_a_broker_that_is_not_redis() -> None:
    assert broker_redis("amqp://guest@rabbit//") is None


@pytest.fixture
def redis_prefix() -> Iterator[tuple[Any, str]]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"assistant-test-{uuid.uuid4().hex[:10]}:"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.integration
def test_queue_depth_counts_what_celery_queued(redis_prefix: tuple[Any, str], tmp_path: Path) -> None:
    from tests.workers._helpers import worker_settings
    from workers.celery_app import make_celery

    client, prefix = redis_prefix
    settings = worker_settings(tmp_path / "home", "unused", broker_url=REDIS_URL, redis_key_prefix=prefix)
    app = make_celery(settings, include=())
    try:
        for i in range(3):
            app.send_task(PREDICT, kwargs={"labels": ["x"], "images": [], "request_id": f"r{i}"})
        app.send_task(PREDICT, kwargs={"labels": ["x"], "images": []}, priority=9)  # a priority list of its own
        app.send_task(TRAIN_ROUND, kwargs={"project": 1})
    finally:
        app.close()
    reader = broker_redis(REDIS_URL, timeout_s=2.0)
    assert reader is not None
    try:
        depths = queue_depths(reader, ("predict", "train"), prefix)
    finally:
        reader.close()
    assert depths.waiting == {"predict": 4, "train": 1} and depths.unacked == 0 and depths.total_waiting == 5
    # Another prefix (another deployment on the same Redis) sees none of them.
    assert queue_depths(client, ("predict", "train"), prefix + "other:").total_waiting == 0


# --- JSON logs ------------------------------------------------------------------------------------------
def test_json_lines_carry_the_context_ids() -> None:
    record = logging.LogRecord("workers.pipeline", logging.INFO, __file__, 1, "predict %s: %d images", ("r1", 3), None)
    record.request_id = "r1"
    record.task_id = "t-9"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "predict r1: 3 images" and doc["level"] == "INFO" and doc["logger"] == "workers.pipeline"
    assert doc["request_id"] == "r1" and doc["task_id"] == "t-9" and "task_name" not in doc
    # Outside a request the backend's filter writes "-": left out rather than logged.
    record.request_id = "-"
    assert "request_id" not in json.loads(JsonFormatter().format(record))
    try:
        raise ValueError("bad")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: bad" in json.loads(JsonFormatter().format(failed))["exc"]


def test_the_task_filter_adds_ids_of_the_running_task(monkeypatch: pytest.MonkeyPatch) -> None:
    import state.logs as logs

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    assert TaskContextFilter().filter(record) and not hasattr(record, "task_id")  # no task running

    request = SimpleNamespace(id="t-1", kwargs={"job": {"request_id": "req-7"}})
    monkeypatch.setattr(logs, "current_task", SimpleNamespace(request=request, name="backends.publish_predictions"))
    assert TaskContextFilter().filter(record)
    assert (record.task_id, record.task_name, record.request_id) == ("t-1", "backends.publish_predictions", "req-7")
    kept = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    kept.request_id = "from-the-backend"
    TaskContextFilter().filter(kept)
    assert kept.request_id == "from-the-backend"


def test_the_backend_logs_the_same_json_with_its_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    from backends.logs import configure_logging, request_id_var

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    token = request_id_var.set("req-42")
    try:
        configure_logging("INFO", json_lines=True)
        logging.getLogger("backends.app").info("setup: project %s", 3)
    finally:
        request_id_var.reset(token)
        root.handlers[:] = handlers
        root.setLevel(level)
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    assert line["message"] == "setup: project 3" and line["request_id"] == "req-42" and line["logger"] == "backends.app"


# --- a real prefork worker: one exporter for all its processes ----------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.mark.integration
@pytest.mark.slow
def test_a_prefork_worker_exports_all_its_processes_and_logs_json(
    redis_prefix: tuple[Any, str], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from tests.workers._helpers import worker_settings
    from workers.celery_app import make_celery

    _, prefix = redis_prefix
    write_images(tmp_path / "images", 16)
    server = ImageServer(tmp_path / "images").start()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "LABEL_STUDIO_", "PROMETHEUS_"))}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "ASSISTANT_HOME": str(tmp_path / "home"),
            "ASSISTANT_BASE_MODEL": str(tiny_checkpoint),
            "ASSISTANT_BROKER_URL": REDIS_URL,
            "ASSISTANT_REDIS_KEY_PREFIX": prefix,
            "ASSISTANT_DEVICE": "cpu",
            "ASSISTANT_BATCH_SIZE": "4",
            "ASSISTANT_MEDIA_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
            "ASSISTANT_LABEL_STUDIO_URL": "http://127.0.0.1:9",
            "ASSISTANT_LOG_FORMAT": "json",
            "ASSISTANT_WORKER_METRICS_PORT": str(port),
        }
    )
    node = f"metrics-{uuid.uuid4().hex[:6]}@localhost"
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "worker", "-Q", "predict", "-c", "2", "-n", node]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    settings = worker_settings(tmp_path / "home", tiny_checkpoint, broker_url=REDIS_URL, redis_key_prefix=prefix)
    app = make_celery(settings, include=())
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        # Four messages for two child processes: both children run tasks.
        requests = [
            PredictRequest(
                labels=LABELS,
                images=[ImageRef(key=f"{k}-{i}", url=f"{server.url}/img{k * 4 + i:03d}.png") for i in range(4)],
                request_id=f"req-{k}",
            )
            for k in range(4)
        ]
        pending = [app.send_task(PREDICT, kwargs=r.model_dump(mode="json")) for r in requests]
        for handle in pending:
            handle.get(timeout=120)
        samples = _scrape(f"http://127.0.0.1:{port}/metrics")
        computed = samples[("assistant_worker_images_total", (("outcome", "computed"), ("task", PREDICT)))]
        assert computed == 16
        runs = samples[("assistant_worker_task_seconds_count", (("state", "success"), ("task", PREDICT)))]
        assert runs == 4

        # The log lines of a task carry its id and the request id of its payload.
        lines = [doc for doc in map(_json_or_none, log.read_text().splitlines()) if doc]
        tagged = [doc for doc in lines if doc.get("logger") == "workers.pipeline"]
        assert {doc.get("request_id") for doc in tagged} == {f"req-{k}" for k in range(4)}
        assert all(doc.get("task_id") and doc.get("task_name") == PREDICT for doc in tagged)

        # `assistant status` sees the worker, its queue and its pool.
        status = subprocess.run(
            [sys.executable, "-c", "from cli.main import main; main()", "status", "--json", "--timeout", "2"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        (worker,) = [w for w in report["workers"] if w["name"] == node]
        assert worker["queues"] == ["predict"] and worker["pool"] == "prefork" and worker["concurrency"] == 2
        assert worker["tasks_done"] == 4 and report["queues"] == {"predict": 0, "train": 0}
    finally:
        app.close()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        server.stop()
    # The children's samples went through a private multiprocess directory, removed at shutdown.
    (line,) = [
        doc for doc in map(_json_or_none, log.read_text().splitlines()) if doc and "metrics on" in doc["message"]
    ]
    directory = Path(line["message"].rsplit("samples in ", 1)[1].rstrip(")"))
    assert directory.name.startswith("assistant-worker-metrics-") and not directory.exists()


def _json_or_none(line: str) -> dict[str, Any] | None:
    with contextlib.suppress(json.JSONDecodeError):
        doc = json.loads(line)
        return doc if isinstance(doc, dict) else None
    return None


# --- the worker command's exporter options ---------------------------------------------------------------
@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    from celery import Celery

    calls: list[list[str]] = []
    monkeypatch.setattr(Celery, "worker_main", lambda self, argv: calls.append(list(argv)))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield calls
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_taken_metrics_port_stops_the_worker_with_the_fix(started: list[list[str]]) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["worker", "--metrics-port", str(port)])
    assert result.exit_code == 1 and not started
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.output and "--metrics-port" in result.output


def test_a_solo_worker_serves_its_own_registry(started: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery
    from typer.testing import CliRunner

    from cli.main import app

    port = _free_port()
    scraped: list[str] = []

    def run(self: Celery, argv: list[str]) -> None:
        started.append(list(argv))
        worker_metrics().record_images(PREDICT, cached=1, computed=0)
        scraped.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)

    monkeypatch.setattr(Celery, "worker_main", run)
    result = CliRunner().invoke(app, ["worker", "--metrics-port", str(port)])
    assert result.exit_code == 0, result.output
    assert "--pool=solo" in started[0]
    assert f'assistant_worker_images_total{{outcome="cached",task="{PREDICT}"}}' in scraped[0]
    # The exporter stopped with the worker: nothing listens any more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_prefork_metrics_need_a_process_of_their_own(started: list[list[str]]) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    # prometheus_client is imported in this test process already: its multiprocess mode cannot be
    # switched on any more, and the worker says so instead of exporting only its parent's samples.
    result = CliRunner().invoke(app, ["worker", "-c", "2", "--metrics-port", str(_free_port())])
    assert result.exit_code == 1 and not started
    assert "multiprocess mode" in result.output
