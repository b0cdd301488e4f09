"""The dashboard's routes through the backend app: pages, auth, friendly errors, promote and rollback."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.decision_log import open_decision_log
from tests.backends._app_fakes import Harness, make_harness
from tests.dashboard.world import PROJECT, World, build_small, decision_rows, write_decisions

AUTH = ("lead", "s3cret-pass")


def _built(tmp_path: Path) -> tuple[Harness, World]:
    harness = make_harness(tmp_path, basic_auth_user=AUTH[0], basic_auth_password=AUTH[1])
    world = build_small(harness.settings.models_dir, harness.registry, harness.ledger)
    write_decisions(harness.settings.home / "agent.sqlite3", decision_rows(PROJECT, 120))
    return harness, world


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, World]]:
    """One project for the tests that only read (building it draws the reports' plots: seconds)."""
    yield _built(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture
def harness(shared: tuple[Harness, World]) -> Harness:
    return shared[0]


@pytest.fixture
def world(shared: tuple[Harness, World]) -> World:
    return shared[1]


@pytest.fixture(scope="module")
def client(shared: tuple[Harness, World]) -> Iterator[TestClient]:
    # One lifespan for the module: its end closes the decision log the app opened.
    with TestClient(shared[0].app) as c:
        c.auth = AUTH
        yield c


def test_every_page_needs_the_backends_credentials(client: TestClient):
    anonymous = TestClient(client.app)  # the same app, no credentials (its lifespan runs in `client`)
    for path in ("/ui/", f"/ui/p/{PROJECT}/", f"/ui/p/{PROJECT}/value", "/ui/static/dashboard.css"):
        r = anonymous.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Basic")
        assert "text/html" in r.headers["content-type"] and "sign in" in r.text
    wrong = anonymous.get("/ui/", auth=("lead", "nope"))
    assert wrong.status_code == 401 and "wrong Basic auth user or password" in wrong.text
    assert anonymous.post(f"/ui/p/{PROJECT}/rollback", data={"token": "x"}).status_code == 401
    assert client.get("/ui/static/dashboard.js").status_code == 200


def test_the_pages_show_the_project(client: TestClient, world: World):
    index = client.get("/ui/")
    assert index.status_code == 200 and f'href="/ui/p/{PROJECT}/"' in index.text
    # scripts only from the backend, never in a frame of another site
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in index.headers["content-security-policy"]
    now = client.get(f"/ui/p/{PROJECT}/")
    assert now.status_code == 200 and "mkt-p3-r0001" in now.text and "held-out mAP" in now.text
    assert "not running" in now.text and "free" in now.text
    value = client.get(f"/ui/p/{PROJECT}/value")
    assert 'class="headline negative"' in value.text
    assert "pre-annotation costs 25% more edits than labeling from scratch" in value.text
    assert "with the model in service it saves 50% of the edits" in value.text
    assert "tripped: not shown" in value.text  # the guard's state of 'sofa'
    assert value.text.index(">sofa<") < value.text.index(">tree<") < value.text.index(">cat<")  # costliest first
    assert f"/ui/p/{PROJECT}/rounds/r0002/effort.png" in value.text
    rounds = client.get(f"/ui/p/{PROJECT}/rounds")
    assert "RuntimeError: the trainer rejected" in rounds.text and ">refused<" in rounds.text
    assert "1 failed" in rounds.text and "Promote…" in rounds.text and "Roll back…" in rounds.text
    review = client.get(f"/ui/p/{PROJECT}/agent", params={"action": "review"})
    assert review.status_code == 200 and review.text.count("<details>") == 17 and "likely missed" in review.text
    assert 'rel="next"' not in review.text  # 120 decisions, one in seven a review: one page
    agent = client.get(f"/ui/p/{PROJECT}/agent")
    assert agent.text.count("<details>") == 50 and "(new imports), step 119" in agent.text
    older = re.search(r'href="\?before=(\d+)"', agent.text)
    assert older is not None
    page2 = client.get(f"/ui/p/{PROJECT}/agent", params={"before": older.group(1)})
    assert (
        page2.text.count("<details>") == 50
        and re.search(r"step 69\D", page2.text)
        and not re.search(r"step 70\D", page2.text)
    )
    queue = client.get(f"/ui/p/{PROJECT}/queue")
    assert "http://localhost:8080/projects/3/data?task=1000" in queue.text or "/projects/3/data?task=1000" in queue.text
    assert "label quality" in queue.text


def test_a_round_report_is_rendered_with_its_plot_and_no_raw_html(client: TestClient):
    page = client.get(f"/ui/p/{PROJECT}/rounds/r0001/")
    assert page.status_code == 200
    assert "<table>" in page.text and '<img src="effort.png"' in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
    plot = client.get(f"/ui/p/{PROJECT}/rounds/r0001/effort.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png" and plot.content[:4] == b"\x89PNG"
    failed = client.get(f"/ui/p/{PROJECT}/rounds/r0003/")
    assert failed.status_code == 200 and "failed before the report step" in failed.text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/p/77/", 404, "no project 77"),
        ("/ui/p/abc/value", 400, "malformed the project id"),
        (f"/ui/p/{PROJECT}/rounds?page=x", 400, "malformed the page number"),
        (f"/ui/p/{PROJECT}/rounds?page=0", 400, "malformed the page number"),
        (f"/ui/p/{PROJECT}/rounds?page=9", 404, "no page 9"),
        (f"/ui/p/{PROJECT}/agent?action=drop", 400, "unknown action"),
        (f"/ui/p/{PROJECT}/agent?before=-3", 400, "malformed the page cursor"),
        (f"/ui/p/{PROJECT}/rounds/r9999/", 404, "no round r9999"),
        (f"/ui/p/{PROJECT}/rounds/..%2F..%2Fetc/", 404, ""),
        (f"/ui/p/{PROJECT}/rounds/r0001/report.md", 404, "no such plot"),
        (f"/ui/p/{PROJECT}/rounds/r0001/..%2F..%2F..%2Fledger.sqlite3", 404, ""),
        (f"/ui/p/{PROJECT}/confirm?action=promote&version=nope", 404, "no version"),
        (f"/ui/p/{PROJECT}/confirm?action=promote&version=mkt-p3-r0001", 409, "already in service"),
        (f"/ui/p/{PROJECT}/confirm?action=drop", 400, "unknown action"),
        ("/ui/nowhere", 404, "no such page"),
    ],
)
def test_bad_input_gets_a_friendly_page(client: TestClient, path: str, status: int, says: str):
    r = client.get(path)
    assert r.status_code == status
    assert "text/html" in r.headers["content-type"]
    assert says in r.text and "Traceback" not in r.text


def test_promote_and_rollback_are_confirmed_changed_and_audited(tmp_path: Path):
    harness, _ = _built(tmp_path)
    with TestClient(harness.app) as client:
        client.auth = AUTH
        _promote_then_roll_back(client, harness)


def _promote_then_roll_back(client: TestClient, harness: Harness) -> None:
    confirm = client.get(f"/ui/p/{PROJECT}/confirm", params={"action": "promote", "version": "mkt-p3-r0002"})
    assert confirm.status_code == 200 and "mkt-p3-r0001" in confirm.text
    token = re.search(r'name="token" value="([0-9a-f]+)"', confirm.text)
    assert token is not None
    forged = client.post(f"/ui/p/{PROJECT}/promote", data={"version": "mkt-p3-r0002", "token": "0" * 64})
    assert forged.status_code == 403 and harness.registry.current(PROJECT).version == "mkt-p3-r0001"
    other = client.post(
        f"/ui/p/{PROJECT}/promote", data={"version": harness.registry.base_version(), "token": token.group(1)}
    )
    assert other.status_code == 403  # the token is bound to the version it confirmed
    done = client.post(
        f"/ui/p/{PROJECT}/promote", data={"version": "mkt-p3-r0002", "token": token.group(1)}, follow_redirects=False
    )
    assert done.status_code == 303
    assert harness.registry.current(PROJECT).version == "mkt-p3-r0002"
    page = client.get(done.headers["location"])
    assert "lead promoted mkt-p3-r0002 (was mkt-p3-r0001)" in page.text

    confirm = client.get(f"/ui/p/{PROJECT}/confirm", params={"action": "rollback"})
    token = re.search(r'name="token" value="([0-9a-f]+)"', confirm.text)
    assert token is not None
    back = client.post(f"/ui/p/{PROJECT}/rollback", data={"version": "", "token": token.group(1)})
    assert back.status_code == 200 and harness.registry.current(PROJECT).version == "mkt-p3-r0001"

    log = open_decision_log(None, home=harness.settings.home)
    try:
        audit = [r for r in log.states(PROJECT) if r.decision.action in ("promote", "rollback")]
    finally:
        log.close()
    assert [(r.decision.action, r.decision.saw["by"], r.status) for r in audit] == [
        ("promote", "lead", "done"),
        ("rollback", "lead", "done"),
    ]
    assert audit[1].decision.params == {"version": "mkt-p3-r0001", "previous": "mkt-p3-r0002"}
    story = client.get(f"/ui/p/{PROJECT}/agent", params={"action": "rollback"})
    assert "lead rolled back to mkt-p3-r0001 (was mkt-p3-r0002) from the dashboard" in story.text


def test_an_empty_backend_lists_no_project(tmp_path: Path):
    harness = make_harness(tmp_path)
    with TestClient(harness.app) as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and "No project yet" in page.text
        assert c.get("/ui/p/1/").status_code == 404


def test_a_store_that_cannot_be_read_gets_a_503_page(tmp_path: Path):
    harness, _ = _built(tmp_path)
    pointer = harness.settings.models_dir / "projects" / str(PROJECT) / "current.json"
    with TestClient(harness.app) as client:
        client.auth = AUTH
        pointer.write_text("{not json", encoding="utf-8")  # a registry pointer nobody can read
        page = client.get(f"/ui/p/{PROJECT}/")
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
        assert "records cannot be read right now" in page.text and "Traceback" not in page.text


def test_now_shows_when_a_local_agent_last_looked(client: TestClient, harness: Harness):
    alive = harness.settings.home / "agent-alive"
    alive.touch()
    when = dt.datetime(2026, 12, 7, 4, 30, tzinfo=dt.UTC).timestamp()
    os.utime(alive, (when, when))
    try:
        assert "2026-12-07 04:30:00 UTC" in client.get(f"/ui/p/{PROJECT}/").text
    finally:
        alive.unlink()
    assert "2026-12-07 04:30:00 UTC" not in client.get(f"/ui/p/{PROJECT}/").text
