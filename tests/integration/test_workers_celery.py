"""Real Celery workers on the real Redis: batches end to end, version reloads, and a SIGKILL mid-batch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from state.contracts import EMBED, PREDICT, EmbedResult, ImageRef, PredictRequest, PredictResult
from state.registry import Registry
from tests.integration.workers_fixtures import WorkerCluster, cluster, workers_base_model  # noqa: F401
from tests.workers._helpers import save_tiny_checkpoint
from workers import pipeline
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

LABELS = ["cat", "dog", "snow"]


def _request(cluster: WorkerCluster, names: list[str], **kw: object) -> PredictRequest:  # noqa: F811
    refs = [ImageRef(key=n, url=f"{cluster.server.url}/{n}", task_id=i) for i, n in enumerate(names)]
    return PredictRequest(labels=LABELS, images=refs, **kw)


def _names(start: int, stop: int) -> list[str]:
    return [f"img{i:03d}.png" for i in range(start, stop)]


def _reference(cluster: WorkerCluster, request: PredictRequest, tmp_path: Path) -> PredictResult:  # noqa: F811
    # The same request in-process, with a cache of its own: what a worker must answer.
    settings = cluster.settings.model_copy(update={"home": tmp_path / "reference-home"})
    runtime = Runtime(settings)
    try:
        return pipeline.predict(runtime, request)
    finally:
        runtime.close()


def _assert_same(result: PredictResult, expected: PredictResult) -> None:
    assert [i.key for i in result.items] == [i.key for i in expected.items]
    assert result.model_version == expected.model_version
    for got, want in zip(result.items, expected.items, strict=True):
        assert got.error is None and got.scores is not None and want.scores is not None
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_batches_and_version_reload(cluster: WorkerCluster, tmp_path: Path) -> None:  # noqa: F811
    cluster.start_worker("w1")
    app = cluster.app()
    requests = [_request(cluster, _names(k * 8, k * 8 + 8), project=5, request_id=f"r{k}") for k in range(3)]
    pending = [app.send_task(PREDICT, kwargs=r.model_dump(mode="json")) for r in requests]
    embed = app.send_task(EMBED, kwargs={"images": [{"key": "x", "url": f"{cluster.server.url}/img000.png"}]})
    results = [PredictResult.model_validate(p.get(timeout=120)) for p in pending]
    for request, result in zip(requests, results, strict=True):
        _assert_same(result, _reference(cluster, request, tmp_path))
    assert EmbedResult.model_validate(embed.get(timeout=60)).items[0].cached is True  # predicted just before

    # A promotion reaches the running worker on its next task, without a restart.
    registry = Registry(cluster.settings.models_dir, cluster.settings.base_model)
    registry.register(save_tiny_checkpoint(tmp_path / "v2", "tiny-v2", seed=3), project=5)
    registry.promote(5, "tiny-v2")
    again = PredictResult.model_validate(
        app.send_task(PREDICT, kwargs=requests[0].model_dump(mode="json")).get(timeout=120)
    )
    assert again.model_version == "tiny-v2" and again.items[0].scores != results[0].items[0].scores
    bad = app.send_task(PREDICT, kwargs={"labels": [], "images": []})
    with pytest.raises(Exception, match="PredictRequest payload is invalid"):
        bad.get(timeout=60)


def test_sigkill_mid_batch_is_redelivered_to_another_worker(cluster: WorkerCluster, tmp_path: Path) -> None:  # noqa: F811
    first = cluster.start_worker("w1")
    app = cluster.app()
    batch_a = _request(cluster, _names(0, 8), request_id="a")
    batch_b = _request(cluster, _names(8, 16), request_id="b")
    # Slow storage: every image takes 2 s, so the worker is certainly mid-batch when the first
    # request for batch A reaches the server.
    cluster.server.delay_s = 2.0
    result_a = app.send_task(PREDICT, kwargs=batch_a.model_dump(mode="json"))
    result_b = app.send_task(PREDICT, kwargs=batch_b.model_dump(mode="json"))
    deadline = time.monotonic() + 90
    while cluster.server.total_requests() == 0:
        assert time.monotonic() < deadline, first.text()[-3000:]
        time.sleep(0.05)
    first.kill()
    assert result_a.state in ("PENDING", "STARTED")
    seen_by_first = sum(cluster.server.requests[f"/{n}"] for n in _names(0, 8))
    assert seen_by_first >= 1 and all(cluster.server.requests[f"/{n}"] == 0 for n in _names(8, 16))

    cluster.server.delay_s = 0.0
    second = cluster.start_worker("w2")
    a = PredictResult.model_validate(result_a.get(timeout=120))
    b = PredictResult.model_validate(result_b.get(timeout=120))
    # Nothing lost, nothing duplicated: every image once, with the scores an undisturbed run gives.
    _assert_same(a, _reference(cluster, batch_a, tmp_path))
    _assert_same(b, _reference(cluster, batch_b, tmp_path))
    assert len({i.key for i in a.items}) == 8
    log = second.text()
    assert log.count(f"Task {PREDICT}[{result_a.id}] succeeded") == 1
    assert log.count(f"Task {PREDICT}[{result_b.id}] succeeded") == 1
    assert f"[{result_a.id}] succeeded" not in first.text()
    # The images of A were fetched again by the second worker: the batch really ran twice.
    assert sum(cluster.server.requests[f"/{n}"] for n in _names(0, 8)) >= seen_by_first + 8
