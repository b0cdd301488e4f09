"""`assistant status`: Redis down, the registry, the ledger and the round log, queue depth (real Redis).

Workers online are checked against a real prefork worker in tests/workers/test_metrics.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.status import _last_round
from state.ledger import LedgerEvent, open_ledger
from state.registry import Registry
from state.settings import get_settings
from tests.workers._helpers import save_tiny_checkpoint

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("status-ckpt")
    return save_tiny_checkpoint(root / "base", "tiny-base"), save_tiny_checkpoint(root / "r1", "mkt-p3-r0001", seed=1)


@pytest.fixture
def home(tmp_path: Path, checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base, _ = checkpoints
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSISTANT_BASE_MODEL", str(base))
    monkeypatch.setenv("ASSISTANT_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("ASSISTANT_REDIS_KEY_PREFIX", f"assistant-test-{uuid.uuid4().hex[:10]}:")
    monkeypatch.setenv("ASSISTANT_LABEL_STUDIO_API_KEY", "")
    monkeypatch.delenv("ASSISTANT_LEDGER_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def _state(home: Path, checkpoints: tuple[Path, Path]) -> None:
    """Project 3: a promoted version, 2 corrections since its last round; project 5: corrections only."""
    base, round1 = checkpoints
    registry = Registry(home / "models", str(base))
    registry.register(round1, parent="tiny-base", project=3, round_id="r0001")
    registry.promote(3, "mkt-p3-r0001")
    log = home / "models" / "rounds" / "3" / "rounds.jsonl"
    log.parent.mkdir(parents=True)
    entry = {"round_id": "r0001", "status": "promoted", "finished_at": "2026-03-01T03:00:00+00:00"}
    log.write_text(json.dumps({"round_id": "r0000", "status": "skipped"}) + "\n" + json.dumps(entry) + "\n{torn")
    ledger = open_ledger(None, home=home)
    try:

        def event(project: int, annotation: int) -> LedgerEvent:
            return LedgerEvent.annotation(
                "ANNOTATION_CREATED",
                project=project,
                annotation_id=annotation,
                task=annotation,
                result=[],
                created_at=f"2026-03-0{annotation}T00:00:00Z",
            )

        ledger.append([event(3, 1)])
        ledger.record_round(3, "r0001", ledger.watermark(3))
        ledger.append([event(3, 2), event(3, 3), event(5, 4)])
    finally:
        ledger.close()


def test_redis_down_is_said_clearly_and_the_rest_still_shows(
    home: Path, checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _state(home, checkpoints)
    monkeypatch.setenv("ASSISTANT_BROKER_URL", "redis://:s3cret-pass@127.0.0.1:1/0")
    get_settings.cache_clear()

    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["redis"]["ok"] is False and "ConnectionError" in report["redis"]["error"]
    assert any("Redis is unreachable" in e and "ASSISTANT_BROKER_URL" in e for e in report["errors"])
    assert report["broker"] == "redis://:***@127.0.0.1:1/0" and "s3cret-pass" not in result.output
    assert report["workers"] == [] and report["queues"] == {}
    assert [p["project"] for p in report["projects"]] == [3, 5]  # the registry and ledger still answer

    table = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"})
    assert table.exit_code == 1
    assert "Redis is unreachable at redis://:***@127.0.0.1:1/0" in table.output
    assert "Fix: start Redis" in table.output and "Queues" not in table.output


@pytest.mark.integration
def test_versions_rounds_corrections_and_queue_depth(home: Path, checkpoints: tuple[Path, Path]) -> None:
    import redis

    from state.contracts import PREDICT
    from workers.celery_app import make_celery

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    _state(home, checkpoints)
    settings = get_settings()
    queued = make_celery(settings, include=())
    try:
        for _ in range(2):
            queued.send_task(PREDICT, kwargs={"labels": ["x"], "images": []})
        result = CliRunner().invoke(app, ["status", "--json", "--timeout", "0.5"])
        table = CliRunner().invoke(app, ["status", "--timeout", "0.5"], env={"COLUMNS": "200"})
    finally:
        queued.close()
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["redis"] == {"ok": True, "error": None}
    assert report["queues"] == {"predict": 2, "train": 0} and report["unacked"] == 0
    assert report["workers"] == []  # nobody consumes this prefix
    assert report["base_model"] == "tiny-base"
    by_project = {p["project"]: p for p in report["projects"]}
    assert by_project[3]["model_version"] == "mkt-p3-r0001" and by_project[3]["new_corrections"] == 2
    assert by_project[3]["last_round"]["round_id"] == "r0001" and by_project[3]["last_round"]["status"] == "promoted"
    assert by_project[5]["model_version"] == "tiny-base" and by_project[5]["new_corrections"] == 1
    assert by_project[5]["last_round"] is None

    assert table.exit_code == 0, table.output
    assert "No worker answered" in table.output and "mkt-p3-r0001" in table.output and "promoted" in table.output


def test_the_round_log_path_is_the_workers(tmp_path: Path) -> None:
    # cli/status reads the log itself (workers.rounds imports torch); both must agree on where it is.
    from workers.rounds import RoundPaths

    path = RoundPaths(tmp_path, 7).log
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"round_id": "r0003", "status": "kept"}) + "\n")
    assert _last_round(tmp_path, 7) == {"round_id": "r0003", "status": "kept"}
    assert _last_round(tmp_path, 8) is None


def _effort_state(home: Path) -> None:
    """Project 3 (serving mkt-p3-r0001): 3 counted annotations, a tripped tag, a failed refit, a failed pass."""
    from state.effort_records import CountedAnnotation, GuardState, TagAnswer

    ledger = open_ledger(None, home=home)
    try:
        store = ledger.effort

        def ann(aid: int, shown: set[str], final: set[str], version: str) -> CountedAnnotation:
            answers = tuple(TagAnswer(t, t in shown, t in final) for t in sorted(shown | final))
            at = f"2026-03-0{aid}T00:00:00Z"
            return CountedAnnotation(aid, aid, aid, 50 + aid, "parent", version, "platt", None, answers, at)

        store.record(
            3,
            through=1,
            counted=[
                ann(1, {"cat", "dog"}, {"cat"}, "tiny-base+aaaa1111"),
                ann(2, {"cat"}, {"cat", "sofa"}, "mkt-p3-r0001+aaaa1111"),
                ann(3, {"dog"}, set(), "mkt-p3-r0001+aaaa1111"),
            ],
        )
        store.note_serving(3, "mkt-p3-r0001", "platt")
        store.set_guard(
            3, GuardState("dog", "tripped", "mkt-p3-r0001", reason="tripped: kept 0 of 20"), "tripped", 0, 20
        )
        store.save_refit(3, "mkt-p3-r0001", recalibration=None, annotations=3, through_seq=3, error="ValueError: nan")
        store.note_failure(3, "cannot reach Label Studio for GET prediction 52: ConnectError")
    finally:
        ledger.close()


def test_status_shows_the_saving_the_calibration_the_guard_and_background_failures(
    home: Path, checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _state(home, checkpoints)
    _effort_state(home)
    monkeypatch.setenv("ASSISTANT_BROKER_URL", "redis://127.0.0.1:1/0")  # Redis down: the rest still shows
    get_settings.cache_clear()

    result = CliRunner().invoke(app, ["status", "--json"])
    report = json.loads(result.output)
    effort = {p["project"]: p for p in report["projects"]}[3]["preannotation"]
    assert effort["totals"]["tasks"] == 3 and (effort["totals"]["kept"], effort["totals"]["removed"]) == (2, 2)
    # 2 removes + 1 add against 3 true tags: no work saved; task 3 (a remove, nothing true) cost more.
    assert effort["totals"]["edits_per_task"] == pytest.approx(1.0) and effort["totals"]["added"] == 1
    assert effort["totals"]["scratch_per_task"] == pytest.approx(1.0) and effort["totals"]["saved_share"] == 0
    assert effort["totals"]["costlier_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert effort["in_service"]["tasks"] == 2  # mkt-p3-r0001 only
    assert [v["model_version"] for v in effort["versions"]] == ["tiny-base+aaaa1111", "mkt-p3-r0001+aaaa1111"]
    assert effort["tags"]["dog"] == {
        "kept": 0, "removed": 2, "added": 0, "precision": 0.0, "recall": None, "saved": -2.0, "novel": False,
        "guard": "tripped",
    }  # fmt: skip
    assert effort["tags"]["sofa"]["added"] == 1 and effort["guard"]["tripped"][0]["tag"] == "dog"
    assert effort["calibration"]["model"] == "platt" and effort["calibration"]["refit"]["status"] == "failed"
    assert effort["counting"]["pending"] == 2 and effort["counting"]["failures"] == 1  # 3 rows, 1 counted
    alerts = " ".join(report["alerts"])
    assert "2 annotation events wait to be counted" in alerts and "ConnectError" in alerts
    assert "refit r1 failed" in alerts and "ValueError: nan" in alerts

    table = CliRunner().invoke(app, ["status"], env={"COLUMNS": "250"})
    assert "Pre-annotation" in table.output and "Alert:" in table.output and "dog" in table.output
    assert "+0% (+0%)" in table.output and "50% (33%)" in table.output  # model in service (all versions)


def test_effort_lists_tags_versions_and_plots(home: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    _state(home, checkpoints)
    _effort_state(home)
    plot = tmp_path / "edits.png"
    result = CliRunner().invoke(app, ["effort", "--project", "3", "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model_in_service"] == "mkt-p3-r0001" and report["plot"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["guard_events"][0]["tag"] == "dog" and report["guard_events"][0]["event"] == "tripped"

    only = CliRunner().invoke(app, ["effort", "-p", "3", "--json", "--model-version", "tiny-base+aaaa1111"])
    assert set(json.loads(only.stdout)["tags"]) == {"cat", "dog"}

    table = CliRunner().invoke(app, ["effort", "-p", "3", "--sort", "precision"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = [line for line in table.output.splitlines() if line.startswith("│ ")]
    assert lines.index(next(x for x in lines if x.startswith("│ dog"))) < lines.index(
        next(x for x in lines if x.startswith("│ cat"))
    )  # dog (0% precision) before cat
    assert "Counting failed" in table.output and "tripped" in table.output

    bad = CliRunner().invoke(app, ["effort", "-p", "3", "--sort", "nope"])
    assert bad.exit_code == 2 and "Fix: use one of" in bad.output


def test_effort_count_says_when_label_studio_is_unreachable(
    home: Path, checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _state(home, checkpoints)
    monkeypatch.setenv("ASSISTANT_LABEL_STUDIO_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ASSISTANT_LABEL_STUDIO_API_KEY", "token")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["effort", "-p", "3", "--count"])
    assert result.exit_code == 1 and "Cannot reach Label Studio" in result.output
    ledger = open_ledger(None, home=home)
    try:
        assert ledger.effort.state(3).failures == 1  # recorded for status
    finally:
        ledger.close()
