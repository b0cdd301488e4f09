"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a live stack.

The stack (``tests/dashboard/stack.py``): the real backend process, real Redis, a recorded project
with rounds (promoted, refused, failed), reports with their plots, the effort ledger and the
decision log. The tests open every page, click promote and rollback and check the registry on
disk, check that the credentials are required, and save screenshots under the test's output.
``ASSISTANT_UPDATE_SCREENSHOTS=1`` also copies them to ``docs/img/`` (the ones docs/dashboard.md shows).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.stack import PASSWORD, USER, Stack, running_stack
from tests.dashboard.world import PROJECT

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("ASSISTANT_CHROMIUM", "/usr/bin/chromium"))
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _browser_or_skip() -> Any:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"chromium is not installed at {CHROMIUM}: the dashboard's browser tests need Debian's chromium. "
            "Fix: apt-get install -y chromium chromium-driver (.ci/run and `make test` do it as root), "
            "or set ASSISTANT_CHROMIUM to a Chromium executable"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed. Fix: make install (it is a dev dependency)")
    return sync_playwright


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _browser_or_skip()
    with running_stack(tmp_path_factory.mktemp("dashboard-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(
        base_url=stack.url,
        http_credentials={"username": USER, "password": PASSWORD},
        viewport={"width": 1280, "height": 900},
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def _follow(page: Any, selector: str, url: str) -> None:
    """Click a link or button and wait until the page it opens has loaded, images included.

    (``locator.count()`` does not wait: counting right after a click could count the old page.)
    """
    page.click(selector)
    page.wait_for_url(url)
    page.wait_for_load_state("load")


def _shot(page: Any, out: Path, name: str, *, full_page: bool = True) -> None:
    path = out / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("ASSISTANT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / path.name)


def test_auth_is_enforced(browser: Any, stack: Stack):
    from playwright.sync_api import Error

    for credentials in (None, {"username": USER, "password": "wrong"}):
        context = browser.new_context(base_url=stack.url, http_credentials=credentials)
        try:
            tab = context.new_page()
            # The browser gets the Basic challenge and cannot answer it: it shows nothing of the page
            # (without credentials Chromium fails the navigation; with wrong ones it shows the 401 page).
            try:
                response = tab.goto(f"/ui/p/{PROJECT}/")
            except Error as exc:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            else:
                assert response is not None and response.status == 401
                assert "sign in" in tab.inner_text("main") and "mkt-p3" not in tab.content()
            answer = tab.request.get(f"/ui/p/{PROJECT}/value")
            assert answer.status == 401 and answer.headers["www-authenticate"].startswith("Basic")
            assert "mkt-p3" not in answer.text()
        finally:
            context.close()


def test_every_page_opens_and_shows_the_project(page: Any, stack: Stack, tmp_path: Path):
    response = page.goto("/ui/")
    assert response.status == 200
    _follow(page, f"a[href='/ui/p/{PROJECT}/']", f"**/ui/p/{PROJECT}/")
    assert page.locator("#model .big").inner_text().startswith("mkt-p3-r0001")
    assert "held by round r0004 on worker-1" in page.locator("#round-lock").inner_text()
    agent = page.locator("#agent-state").inner_text()
    assert "running" in agent and "not running" not in agent and "agent@labeling-host:4242" in agent
    assert "predict" in page.locator("#workers table").inner_text()
    _shot(page, tmp_path, "now")

    _follow(page, "nav >> text=Value", "**/value")
    headline = page.locator("#headline")
    assert "more edits than labeling from scratch" in headline.inner_text()
    assert "negative" in (headline.get_attribute("class") or "")
    assert page.locator("figure img").evaluate("img => img.naturalWidth") > 100  # the report's plot loaded
    assert page.locator("#tags tbody tr").first.locator("td").first.inner_text().startswith(("sofa", "tree"))
    _shot(page, tmp_path, "value")

    _follow(page, "nav >> text=Rounds", "**/rounds")
    rows = page.locator("#rounds tbody tr")
    assert rows.count() == 3
    assert "RuntimeError: the trainer rejected" in rows.nth(0).inner_text()
    assert "refused" in rows.nth(1).inner_text()
    _shot(page, tmp_path, "rounds")
    _follow(page, "#rounds >> text=r0001", "**/rounds/r0001/")
    assert page.locator("article.report table").count() >= 1
    assert page.locator("article.report img").first.evaluate("img => img.naturalWidth") > 100
    _shot(page, tmp_path, "round")

    _follow(page, "nav >> text=Agent", "**/agent")
    assert page.locator("#story > li").count() == 50
    page.select_option("select[name=action]", "review")
    page.wait_for_url("**/agent?action=review")
    page.wait_for_load_state("load")
    first = page.locator("#story details").first
    assert not first.evaluate("d => d.open")
    first.locator("summary").click()
    assert first.evaluate("d => d.open") and "what the policy saw" in first.inner_text()
    _shot(page, tmp_path, "agent", full_page=False)  # the story with one decision expanded
    page.click("[data-expand-all]")
    assert page.locator("#story details[open]").count() == page.locator("#story details").count()

    _follow(page, "nav >> text=Queue and review", "**/queue")
    link = page.locator("#flags a").first
    assert link.get_attribute("href").startswith(f"http://label-studio.invalid:8080/projects/{PROJECT}/data?task=")
    assert "label quality" in page.locator("#flags").inner_text()
    _shot(page, tmp_path, "queue")


def test_bad_input_gets_a_friendly_page(page: Any):
    response = page.goto("/ui/p/999/")
    assert response.status == 404 and "no project 999" in page.inner_text("main")
    response = page.goto(f"/ui/p/{PROJECT}/rounds?page=zero")
    assert response.status == 400 and "malformed the page number" in page.inner_text("main")


def test_promote_and_rollback_change_the_registry(page: Any, stack: Stack, tmp_path: Path):
    page.goto(f"/ui/p/{PROJECT}/rounds")
    _follow(page, "a[data-version='mkt-p3-r0002']", "**/confirm?*")
    assert "Confirm the promotion" in page.inner_text("h1")
    _shot(page, tmp_path, "confirm")
    _follow(page, "#confirm", "**/rounds?done=*")
    assert stack.registry.current(PROJECT).version == "mkt-p3-r0002"
    assert "lead promoted mkt-p3-r0002 (was mkt-p3-r0001)" in page.inner_text("#done")
    assert page.inner_text("#current") == "mkt-p3-r0002"

    _follow(page, "#rollback", "**/confirm?*")
    _follow(page, "#confirm", "**/rounds?done=*")
    assert stack.registry.current(PROJECT).version == "mkt-p3-r0001"
    page.goto(f"/ui/p/{PROJECT}/agent?action=rollback")
    assert "lead rolled back to mkt-p3-r0001 (was mkt-p3-r0002) from the dashboard" in page.inner_text("#story")
