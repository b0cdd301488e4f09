"""The Celery app factory: routing, reliability settings, limits, key prefix, settings carried on the app."""

from __future__ import annotations

from pathlib import Path

from state.contracts import EMBED, PREDICT, QUEUE_PREDICT, QUEUE_TRAIN, SCORE_POOL, TRAIN_ROUND
from state.settings import Settings
from workers.celery_app import make_celery, settings_of


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path, broker_url="redis://127.0.0.1:6379/15", **kw)


def test_reliability_and_serialisation(tmp_path: Path) -> None:
    conf = make_celery(_settings(tmp_path), include=[]).conf
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    assert conf.result_expires == 86_400
    assert conf.result_backend == "redis://127.0.0.1:6379/15"


def test_routes_by_task_name(tmp_path: Path) -> None:
    routes = make_celery(_settings(tmp_path), include=[]).conf.task_routes
    for name in (PREDICT, EMBED, SCORE_POOL):
        assert routes[name] == {"queue": QUEUE_PREDICT}
    assert routes[TRAIN_ROUND] == {"queue": QUEUE_TRAIN}


def test_time_limits_and_visibility_timeout(tmp_path: Path) -> None:
    settings = _settings(tmp_path, predict_soft_time_limit_s=100, predict_time_limit_s=120, train_time_limit_s=7200)
    conf = make_celery(settings, include=[]).conf
    assert conf.task_annotations[PREDICT] == {"soft_time_limit": 100, "time_limit": 120}
    assert conf.task_annotations[TRAIN_ROUND]["time_limit"] == 7200
    # Longer than the longest task, so a running task is never delivered twice.
    assert conf.broker_transport_options["visibility_timeout"] == 7200 + 600
    explicit = make_celery(_settings(tmp_path, visibility_timeout_s=30), include=[]).conf
    assert explicit.broker_transport_options["visibility_timeout"] == 30


def test_key_prefix_and_extra_transport_options(tmp_path: Path) -> None:
    settings = _settings(tmp_path, redis_key_prefix="t1:", broker_transport_options={"unacked_restore_interval": 1})
    conf = make_celery(settings, include=[]).conf
    assert conf.broker_transport_options["global_keyprefix"] == "t1:"
    assert conf.broker_transport_options["unacked_restore_interval"] == 1
    assert conf.result_backend_transport_options == {"global_keyprefix": "t1:"}


def test_settings_travel_with_the_app(tmp_path: Path) -> None:
    settings = _settings(tmp_path, device="cuda:1")
    app = make_celery(settings, include=["workers.tasks"])
    assert settings_of(app) is settings
    assert list(app.conf.include) == ["workers.tasks"]


def test_light_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys, workers.celery_app, state.registry, workers.errors, state.settings; "
        "print(sorted(m for m in ('torch', 'assistant', 'open_clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
