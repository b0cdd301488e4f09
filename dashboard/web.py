"""The dashboard's routes at ``/ui``: server-rendered pages (Jinja2), behind the backend's Basic auth.

=============================================  ===========================================================
``GET  /ui/``                                   the projects the assistant knows
``GET  /ui/p/{project}/``                       **Now**: model in service, workers, queues, agent, round lock
``GET  /ui/p/{project}/value``                  **Value**: edits against from scratch, per version and per tag
``GET  /ui/p/{project}/rounds?page=N``          **Rounds**: the round log (paged) and the registry's versions
``GET  /ui/p/{project}/rounds/{round}/``        one round's report, Markdown rendered, plots shown
``GET  /ui/p/{project}/rounds/{round}/{file}``  a report's plot (PNG/SVG)
``GET  /ui/p/{project}/agent?action=&before=``  **Agent**: the decision log as a story (keyset pages)
``GET  /ui/p/{project}/queue``                  **Queue and review**: tasks to label next, review flags
``GET  /ui/p/{project}/confirm?action=&version=``  confirm a promotion or a rollback
``POST /ui/p/{project}/promote`` / ``rollback``   do it (form with the confirmation's token), then audit it
=============================================  ===========================================================

Every page needs the backend's Basic credentials when they are configured (the browser asks for
them). A promotion or rollback is a form posted from the confirmation page with a token bound to the
user, project, action and version (HMAC with a per-process key), so another site cannot make a
logged-in browser post it; each one is written to the decision log with who and when. Bad input
(an unknown project, a malformed page number or round id) gets a 4xx HTML page that says what
was wrong and where to go, never a traceback.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import jinja2
import psycopg
import redis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from markdown_it import MarkdownIt

from dashboard import views
from dashboard.data import SAFE_NAME, DashboardData
from errors import AssistantError
from state.decision_log import DecisionRow

__all__ = ["PREFIX", "PageError", "error_page", "is_dashboard_path", "mount_dashboard"]

logger = logging.getLogger(__name__)

PREFIX: Final = "/ui"
_HERE: Final = Path(__file__).parent
_STATIC: Final = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_MEDIA: Final = {".png": "image/png", ".svg": "image/svg+xml"}
_REALM: Final = 'Basic realm="labeling-assistant"'
_MAX_FORM_BYTES: Final = 4096


class AuthResult(Protocol):
    """What a credentials check answers (``backends.auth.AuthResult``)."""

    @property
    def ok(self) -> bool:
        """Whether the credentials are good (or none are configured)."""
        ...

    @property
    def reason(self) -> str:
        """Why not, for people."""
        ...


class Authorizer(Protocol):
    """The backend's Basic-auth policy (``backends.auth.AuthPolicy``)."""

    @property
    def basic_enabled(self) -> bool:
        """Whether Basic credentials are configured (else every request is let in, as anonymous)."""
        ...

    def check_basic(self, authorization: str | None) -> AuthResult:
        """Check an ``Authorization`` header."""
        ...


class PageError(Exception):
    """A request the dashboard answers with an HTML error page.

    Args:
        status: The HTTP status (4xx).
        title: One line.
        detail: What was wrong and what to do.
        headers: Extra response headers (``WWW-Authenticate`` on 401).
    """

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}


def is_dashboard_path(path: str) -> bool:
    """Whether a request path belongs to the dashboard (its errors are HTML pages)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = views.age
    env.filters["show"] = _show
    env.filters["when"] = lambda at: f"{str(at)[:19].replace('T', ' ')} UTC" if at else "–"
    env.globals["prefix"] = PREFIX
    return env


def _show(value: Any, limit: int = 2000) -> str:
    """A value of the decision log for people: text as it is, structures as indented JSON (cut at ``limit``)."""
    text = value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + " …"


@functools.cache
def _markdown() -> MarkdownIt:
    # Raw HTML in a report is shown as text, never interpreted.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


#: Every page: scripts, styles and images from the backend only, never framed by another site.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(template: str, **context: Any) -> HTMLResponse:
    """A template rendered into a 200 HTML response."""
    return HTMLResponse(_templates().get_template(template).render(**context), headers=_PAGE_HEADERS)


def error_page(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    """The friendly error page."""
    html = _templates().get_template("error.html").render(status=status, title=title, detail=detail, project=None)
    return HTMLResponse(html, status, headers={**_PAGE_HEADERS, **(headers or {})})


def _int(value: str | None, what: str, *, default: int | None = None, minimum: int = 1) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise PageError(400, f"malformed {what}", f"{what} must be a whole number ≥ {minimum}, not {value[:40]!r}.")
    return number


class Dashboard:
    """The routes' state: the data, the auth policy and the key of the confirmation tokens."""

    def __init__(self, data: DashboardData, auth: Authorizer) -> None:
        self.data = data
        self.auth = auth
        self._key = secrets.token_bytes(32)

    # --- auth and tokens -----------------------------------------------------------------------------
    def user(self, request: Request) -> str:
        """The Basic-auth user, after checking the credentials (``anonymous`` when auth is off)."""
        header = request.headers.get("authorization")
        verdict = self.auth.check_basic(header)
        if not verdict.ok:
            raise PageError(
                401,
                "sign in to see the dashboard",
                f"{verdict.reason}. Use the credentials configured on the backend (ASSISTANT_BASIC_AUTH_USER).",
                {"WWW-Authenticate": _REALM},
            )
        if not self.auth.basic_enabled or not header:
            return "anonymous"
        try:
            return base64.b64decode(header.split(" ", 1)[1]).decode("utf-8").partition(":")[0] or "anonymous"
        except Exception:  # checked above; a name we cannot read is still an audit entry
            return "unknown"

    def token(self, user: str, project: int, action: str, version: str) -> str:
        """The confirmation token of one change."""
        msg = f"{user}\x00{project}\x00{action}\x00{version}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    # --- lookups -----------------------------------------------------------------------------------
    def project(self, value: str) -> int:
        """A known project id, or a 400/404 page."""
        number = _int(value, "the project id")
        assert number is not None
        if not self.data.known(number):
            known = ", ".join(str(p) for p in self.data.projects()[:20]) or "none yet"
            raise PageError(
                404,
                f"no project {number} here",
                f"The assistant knows no project {number} (known: {known}). Pick one on the projects page.",
            )
        return number


#: What a store that cannot be read raises (the registry, the ledgers, the decision log, Redis).
_STORE_ERRORS: Final = (AssistantError, redis.RedisError, OSError, sqlite3.Error, psycopg.Error)


class _PageRoute(APIRoute):
    """A dashboard route: a store that cannot be read gives a 503 page saying which, not a bare 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except _STORE_ERRORS as exc:
                logger.error("dashboard %s: a store cannot be read: %s", request.url.path, exc)
                return error_page(
                    503,
                    "the assistant's records cannot be read right now",
                    f"{type(exc).__name__}: {str(exc)[:300]}. Fix: check that Redis and the ledger's database run "
                    "and that the backend can read ASSISTANT_HOME; then reload the page.",
                )

        return guarded


def _read_form(body: bytes) -> dict[str, str]:
    if len(body) > _MAX_FORM_BYTES:
        raise PageError(413, "form too large", "The confirmation form is a few fields; send it from the page.")
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


def mount_dashboard(app: FastAPI, data: DashboardData, auth: Authorizer) -> None:
    """Add the dashboard's routes under ``/ui`` and its HTML error pages.

    Args:
        app: The backend app.
        data: Where the pages read.
        auth: The backend's Basic-auth policy (the same credentials as ``/predict``).
    """
    dash = Dashboard(data, auth)
    router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=_PageRoute)
    _add_pages(router, dash)
    _add_actions(router, dash)
    app.include_router(router)

    async def page_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return error_page(exc.status, exc.title, exc.detail, exc.headers)

    app.add_exception_handler(PageError, page_error)


def _nav(project: int, page: str) -> dict[str, Any]:
    return {"project": project, "page": page}


def _add_pages(router: APIRouter, dash: Dashboard) -> None:
    data = dash.data

    @router.get("")
    @router.get("/")
    def index(request: Request) -> Response:
        dash.user(request)
        return render("index.html", projects=data.projects(), project=None, page="index")

    @router.get("/static/{name}")
    def static(name: str, request: Request) -> Response:
        dash.user(request)
        if name not in _STATIC:
            raise PageError(404, "no such file", f"The dashboard serves no static file {name[:60]!r}.")
        return FileResponse(_HERE / "static" / name, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    @router.get("/p/{project}")
    def project_root(project: str, request: Request) -> Response:
        dash.user(request)
        return RedirectResponse(f"{PREFIX}/p/{dash.project(project)}/", 307)

    @router.get("/p/{project}/")
    def now(project: str, request: Request) -> Response:
        dash.user(request)
        p = dash.project(project)
        current = data.current(p)
        workers, note = data.workers_online()
        depths_error = None
        try:
            depths = data.queue_depths()
        except Exception as exc:  # Redis down: the rest of the page still shows
            depths, depths_error = None, f"{type(exc).__name__}: {exc}"
        try:
            holder, ttl = data.round_lock(p)
            agent_holder = data.agent_holder(p)
        except Exception as exc:
            holder, ttl, agent_holder = None, None, None
            depths_error = depths_error or f"{type(exc).__name__}: {exc}"
        view = views.now_view(
            p,
            current=current.model_dump(mode="json"),
            history=[e.model_dump(mode="json") for e in data.history(p)],
            workers=workers,
            workers_note=note,
            queues=None if depths is None else depths.waiting,
            unacked=None if depths is None else depths.unacked,
            agent_holder=agent_holder,
            last_decision=data.decisions.latest(p),
            unfinished=data.decisions.recent_unfinished(p),
            round_lock=views.LockCard(holder, ttl),
            alive_at=data.agent_alive_at(),
        )
        return render("now.html", view=view, redis_error=depths_error, **_nav(p, "now"))

    @router.get("/p/{project}/value")
    def value(project: str, request: Request) -> Response:
        dash.user(request)
        p = dash.project(project)
        plot = data.latest_plot(p)
        try:
            effort, error = data.effort(p), None
        except Exception as exc:  # the ledger unreadable: say so on the page
            effort, error = None, f"the effort ledger could not be read: {exc}"
        view = views.value_view(
            p, effort, plot=None if plot is None else plot[1], plot_round=None if plot is None else plot[0], error=error
        )
        return render("value.html", view=view, **_nav(p, "value"))

    @router.get("/p/{project}/rounds")
    def rounds(project: str, request: Request, page: str | None = None) -> Response:
        dash.user(request)
        p = dash.project(project)
        number = _int(page, "the page number", default=1)
        assert number is not None
        entries = data.rounds(p)
        if entries and (number - 1) * views.PAGE_SIZE >= len(entries):
            last = (len(entries) - 1) // views.PAGE_SIZE + 1
            raise PageError(404, f"no page {number}", f"The round log has {len(entries)} rounds: pages 1 to {last}.")
        current = data.current(p).version
        view = views.rounds_view(
            p,
            entries,
            reports=data.report_ids(p),
            versions=[v.model_dump(mode="json") for v in data.versions(p)],
            current=current,
            rollback_possible=data.can_roll_back(p),
            page=number,
        )
        done = request.query_params.get("done", "")[:200]
        return render("rounds.html", view=view, done=done, **_nav(p, "rounds"))

    @router.get("/p/{project}/rounds/{round_id}")
    def round_redirect(project: str, round_id: str, request: Request) -> Response:
        dash.user(request)
        return RedirectResponse(f"{PREFIX}/p/{dash.project(project)}/rounds/{urllib.parse.quote(round_id)}/", 307)

    @router.get("/p/{project}/rounds/{round_id}/")
    def round_page(project: str, round_id: str, request: Request) -> Response:
        dash.user(request)
        p = dash.project(project)
        if not SAFE_NAME.match(round_id):
            raise PageError(400, "malformed round id", "A round id is like r0007: letters, digits, '.', '_', '-'.")
        entry = next((e for e in reversed(data.rounds(p)) if e.get("round_id") == round_id), None)
        report = data.report(p, round_id)
        if entry is None and report is None:
            raise PageError(404, f"no round {round_id}", f"Project {p} has no round {round_id}; see its Rounds page.")
        markdown = None if report is None else report.markdown
        detail = views.round_detail(p, round_id, entry, markdown, [] if report is None else report.files)
        html = None if markdown is None else _markdown().render(markdown)
        shown = [f for f in detail.plots if markdown is None or f"({f})" not in markdown]
        return render(
            "round.html", detail=detail, round_id=round_id, report_html=html, extra_plots=shown, **_nav(p, "rounds")
        )

    @router.get("/p/{project}/rounds/{round_id}/{name}")
    def report_file(project: str, round_id: str, name: str, request: Request) -> Response:
        dash.user(request)
        p = dash.project(project)
        suffix = Path(name).suffix.lower()
        path = data.report_file(p, round_id, name) if suffix in _MEDIA else None
        if path is None:
            raise PageError(404, "no such plot", f"Round {round_id[:40]!r} has no plot {name[:60]!r} (PNG or SVG).")
        return FileResponse(path, media_type=_MEDIA[suffix], headers={"Cache-Control": "max-age=60"})

    @router.get("/p/{project}/agent")
    def agent(project: str, request: Request, action: str | None = None, before: str | None = None) -> Response:
        dash.user(request)
        p = dash.project(project)
        if action and action not in views.AGENT_ACTIONS:
            raise PageError(
                400, "unknown action", f"Filter by one of: {', '.join(views.AGENT_ACTIONS)} (or none for all)."
            )
        cursor = _int(before, "the page cursor")
        page = data.decisions.page(p, action=action or None, before=cursor, limit=views.PAGE_SIZE)
        view = views.agent_view(p, page.rows, action=action or None, next_before=page.next_before, before=cursor)
        return render("agent.html", view=view, **_nav(p, "agent"))

    @router.get("/p/{project}/queue")
    def queue(project: str, request: Request) -> Response:
        dash.user(request)
        p = dash.project(project)
        select: DecisionRow | None = data.decisions.latest(p, statuses=("done",), actions=("select",))
        review = data.decisions.latest(p, statuses=("done",), actions=("review",))
        view = views.queue_view(p, select, review, label_studio_url=data.label_studio_url)
        return render("queue.html", view=view, **_nav(p, "queue"))


def _add_actions(router: APIRouter, dash: Dashboard) -> None:
    data = dash.data

    def target(p: int, action: str, version: str | None) -> tuple[str, str]:
        """``(from, to)`` of a promotion or rollback, or a 4xx page."""
        current = data.current(p).version
        if action == "promote":
            known = {v.version for v in data.versions(p)} | {data.registry.base_version()}
            if not version or version not in known:
                raise PageError(404, "no such version", f"Project {p} has no version {str(version)[:80]!r} to promote.")
            if version == current:
                raise PageError(409, "already in service", f"{version} already serves project {p}.")
            return current, version
        if action == "rollback":
            if not data.can_roll_back(p):
                raise PageError(409, "nothing to roll back", f"Project {p} already uses the base model.")
            return current, "the version before it"
        raise PageError(400, "unknown action", "Confirm either action=promote&version=... or action=rollback.")

    @router.get("/p/{project}/confirm")
    def confirm(project: str, request: Request, action: str = "", version: str | None = None) -> Response:
        user = dash.user(request)
        p = dash.project(project)
        before, after = target(p, action, version)
        token = dash.token(user, p, action, version or "")
        return render(
            "confirm.html",
            action=action,
            version=version or "",
            before=before,
            after=after,
            token=token,
            user=user,
            **_nav(p, "rounds"),
        )

    def apply(project: str, user: str, action: str, form: dict[str, str]) -> Response:
        """Check the confirmation, change the registry, audit it (in a worker thread: file locks, SQL)."""
        p = dash.project(project)
        version = form.get("version", "")
        expected = dash.token(user, p, action, version)
        if not hmac.compare_digest(expected, form.get("token", "")):
            raise PageError(
                403, "not confirmed", "This change was not confirmed on its page (or the backend restarted). Try again."
            )
        before, _ = target(p, action, version or None)
        if action == "promote":
            after = data.registry.promote(p, version).version
        else:
            after = data.registry.rollback(p).version
        data.decisions.audit(
            p, "promote" if action == "promote" else "rollback", who=user, version=after, previous=before
        )
        logger.info("dashboard: %s %s project %s: %s -> %s", user, action, p, before, after)
        verb = "promoted" if action == "promote" else "rolled back to"
        note = urllib.parse.quote(
            f"{user} {verb} {after} (was {before}) at {time.strftime('%H:%M:%S', time.gmtime())} UTC"
        )
        return RedirectResponse(f"{PREFIX}/p/{p}/rounds?done={note}", 303)

    async def change(project: str, request: Request, action: str) -> Response:
        user = dash.user(request)
        form = _read_form(await request.body())
        return await anyio.to_thread.run_sync(functools.partial(apply, project, user, action, form))

    router.add_api_route("/p/{project}/promote", _bind(change, "promote"), methods=["POST"])
    router.add_api_route("/p/{project}/rollback", _bind(change, "rollback"), methods=["POST"])


def _bind(handler: Callable[..., Any], action: str) -> Callable[..., Any]:
    async def route(project: str, request: Request) -> Response:
        result: Response = await handler(project, request, action)
        return result

    return route
