"""The Label Studio ML backend as a FastAPI app: ``create_app(settings) -> FastAPI``.

Routes (Label Studio's ML-backend protocol and ours: ``docs/backend.md``, "Endpoints"):

=================  ======================================================================  =======
``GET /health``    ``{"status": "UP", "model_class": "MKTBackend", "workers": {...}}``;      open
                   no I/O, never waits
``GET /``          same as ``/health``                                                      open
``POST /setup``    ``{"model_version": "<checkpoint>+<vocabulary fingerprint>"}``           Basic
``POST /predict``  one result per task; waits up to the inline budget, rest in background   Basic
                   (at once, with a ``warning``, when no worker consumes the predict queue)
``POST /webhook``  annotation events → ledger; START_TRAINING → round; others ignored      token
``POST /train``    legacy alias of START_TRAINING (Label Studio < 1.12)                    Basic
``GET /versions``  ``{"versions": [...]}``: versions ``/setup`` served, newest first       Basic
``GET /metrics``   Prometheus text                                                         Basic
``/ui/...``        the project dashboard, HTML pages (``dashboard/web.py``)                Basic
=================  ======================================================================  =======

**Never blocked by predictions.** ``/health`` is ``async`` and does no I/O: its ``workers`` field
is the last answer of ``backends.presence`` (whether a worker consumes the predict queue, and how
old the answer is), refreshed in the background; Label Studio reads only ``status``. ``/predict`` waits
for workers in at most ``predict_concurrency`` threads (its own limiter), so the sync routes
(``/setup``, ``/webhook``) always find a thread of the default 40-thread pool.

**Errors** are ``{"detail": "<what failed and the fix>", "request_id": "..."}``: 400 malformed
JSON, 401 auth, 404/405 unknown route or method, 413 body too large, 422 invalid payload or
labeling config, 503 registry or queue (Redis) unavailable, 500 anything else (traceback in the
log only). Credentials, tokens and ``params.password`` are never logged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import kombu.exceptions
import redis
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from backends.auth import AuthPolicy
from backends.dispatch import CeleryDispatcher, Dispatcher
from backends.errors import BackendError
from backends.metrics import BackendMetrics
from backends.middleware import EdgeMiddleware, error_body
from backends.predicting import Predictor, checkpoint_version
from backends.presence import QueueConsumers, active_queues_of, no_worker_message, workers_by_queue
from backends.settings import BackendSettings
from backends.state import RedisState, SharedState
from backends.webhook import EventSink, WebhookHandler, WebhookReply, redis_event_sink
from backends.webhook_check import WebhookWatch
from dashboard.data import DashboardData, Refreshed
from dashboard.web import error_page, is_dashboard_path, mount_dashboard
from state.decision_log import DecisionRows, open_decision_rows
from state.effort_summary import project_effort
from state.ledger import Ledger, open_ledger
from state.locks import redis_url
from state.metrics import QueueDepths, broker_redis, queue_depths
from state.model_info import DEMO_MODEL_FIX, DEMO_MODEL_WHAT, served_model
from state.registry import Registry
from state.round_log import round_statuses
from studio.config import parse_label_config
from studio.errors import StudioError
from studio.protocol import LSPredictRequest, SetupRequest, SetupResponse, parse_project_id
from workers.celery_app import make_celery

__all__ = ["MODEL_CLASS", "Services", "create_app", "effort_figures"]

logger = logging.getLogger(__name__)

MODEL_CLASS = "MKTBackend"
_REALM = 'Basic realm="labeling-assistant"'
_ROUTES = ("/health", "/setup", "/predict", "/webhook", "/train", "/versions", "/metrics", "/ui/")
# The dashboard asks the workers which queues they consume at most this often (a broadcast).
_WORKERS_TTL_S = 15.0


class Services:
    """What the routes use; built from settings unless injected (tests inject fakes).

    Args:
        settings: The backend settings.
        dispatcher: Reaches the workers (default: Celery over the configured broker).
        state: Shared Redis state (default: the dispatcher's, else Redis at the broker URL).
        registry: The model registry (default: ``Settings.models_dir`` and ``base_model``).
        ledger: The corrections ledger (default: ``ledger_url`` or SQLite under ``home``).
        metrics: The metrics (default: new, exporting the background counters of ``state``).
        webhook_watch: Checks each project's webhook after its ``/setup`` (default: through Label
            Studio when an API key is configured, else none).
        decisions: The agent's decision log, read by the dashboard (default: ``agent_log_url`` or
            SQLite under ``home``).
        consumers: Which queues the workers consume (default: asked through the Celery app of the
            default dispatcher; none with an injected dispatcher, which then counts as present).
    """

    def __init__(
        self,
        settings: BackendSettings,
        *,
        dispatcher: Dispatcher | None = None,
        state: SharedState | None = None,
        registry: Registry | None = None,
        ledger: Ledger | None = None,
        metrics: BackendMetrics | None = None,
        webhook_watch: WebhookWatch | None = None,
        decisions: DecisionRows | None = None,
        consumers: QueueConsumers | None = None,
    ) -> None:
        self.settings = settings
        if state is None:
            state = dispatcher.state if dispatcher is not None else _redis_state(settings)
        self.state = state
        if dispatcher is None:
            celery = make_celery(settings, include=())
            dispatcher = CeleryDispatcher(
                celery,
                state,
                predict_queue=settings.predict_queue,
                publish_queue=settings.publish_queue,
                train_queue=settings.train_queue,
                poll_interval_s=settings.predict_poll_interval_s,
                round_lock_ttl_s=settings.round_lock_ttl_s,
            )
            if consumers is None:
                consumers = QueueConsumers(active_queues_of(celery, settings.worker_probe_timeout_s))
        self.dispatcher = dispatcher
        self.consumers = consumers
        self.registry = registry or Registry(settings.models_dir, settings.base_model)
        self._owns_ledger = ledger is None
        self.ledger = ledger or open_ledger(
            settings.ledger_url, home=settings.home, table_prefix=settings.ledger_table_prefix
        )
        self.metrics = metrics or BackendMetrics(
            stats=state.stats,
            queues=_queue_reader(settings),
            effort=functools.partial(effort_figures, self.ledger, self.registry, settings),
            rounds=functools.partial(round_statuses, settings.models_dir),
        )
        self.auth = AuthPolicy(settings.basic_auth_user, settings.basic_auth_password, settings.webhook_token)
        self.predictor = Predictor(
            settings, self.dispatcher, self.registry, self.metrics, self.ledger.effort, consumers=consumers
        )
        self.webhooks = WebhookHandler(self.ledger, self.dispatcher, notify=_event_sink(state, settings))
        self.webhook_watch = webhook_watch or _webhook_watch(settings)
        # Projects whose /setup already logged that the offline demo model serves them (once each).
        self.demo_warned: set[int | None] = set()
        self._owns_decisions = decisions is None
        self.dashboard = DashboardData(
            registry=self.registry,
            ledger=self.ledger,
            decisions=decisions
            or open_decision_rows(
                settings.agent_log_url, home=settings.home, table_prefix=settings.agent_log_table_prefix
            ),
            models_dir=settings.models_dir,
            costs=settings.edit_costs,
            label_studio_url=settings.label_studio_url,
            redis_client=state.client if isinstance(state, RedisState) else None,
            redis_prefix=settings.redis_key_prefix,
            queues=_queue_reader(settings),
            workers=_workers_reader(self.dispatcher),
            home=settings.home,
        )

    def close(self) -> None:
        """Release what the services opened themselves."""
        if self._owns_ledger:
            self.ledger.close()
        if self._owns_decisions:
            self.dashboard.decisions.close()


def effort_figures(ledger: Ledger, registry: Registry, settings: BackendSettings) -> dict[int, dict[str, Any]]:
    """Every project's effort figures for ``/metrics`` (``state.effort_summary``), with its refit counts."""
    out: dict[int, dict[str, Any]] = {}
    for project in sorted(set(ledger.effort.projects()) | set(ledger.projects())):
        try:
            checkpoint: str | None = registry.current(project).version
        except Exception:  # the registry may be unreadable: the counts still export
            checkpoint = None
        figures = project_effort(ledger, project, checkpoint, settings.edit_costs(project), tags=False)
        figures["refits"] = ledger.effort.refit_counts(project)
        out[project] = figures
    return out


def _redis_state(settings: BackendSettings) -> RedisState:
    return RedisState.from_url(
        redis_url(settings.broker_url, settings.result_backend),
        settings.redis_key_prefix,
        timeout_s=settings.redis_timeout_s,
        claim_ttl_s=settings.result_expires_s,
        inflight_ttl_s=settings.inflight_ttl_s,
    )


def _webhook_watch(settings: BackendSettings) -> WebhookWatch | None:
    key = settings.label_studio_api_key.get_secret_value()
    if not key:
        logger.warning(
            "no Label Studio API key: the backend cannot check that projects send it their annotations. "
            "Fix: set ASSISTANT_LABEL_STUDIO_API_KEY"
        )
        return None
    from studio.client import LabelStudioClient

    return WebhookWatch(LabelStudioClient(settings.label_studio_url, key, timeout=10.0, max_retries=0))


def _event_sink(state: SharedState, settings: BackendSettings) -> EventSink | None:
    # Label Studio events wake the agent (backends/webhook.py); only a Redis state can reach it.
    return redis_event_sink(state.client, settings.redis_key_prefix) if isinstance(state, RedisState) else None


def _queue_reader(settings: BackendSettings) -> Callable[[], QueueDepths] | None:
    # The queues live in the broker's Redis database, which may differ from the state's.
    client = broker_redis(settings.broker_url, timeout_s=settings.redis_timeout_s)
    if client is None:
        return None
    queues = tuple(dict.fromkeys((settings.predict_queue, settings.publish_queue, settings.train_queue)))
    return functools.partial(queue_depths, client, queues, settings.redis_key_prefix)


def _workers_reader(dispatcher: Dispatcher) -> Refreshed[dict[str, list[str]]] | None:
    # Only a Celery dispatcher has workers to ask; the broadcast runs in the background (dashboard/data.py).
    if not isinstance(dispatcher, CeleryDispatcher):
        return None
    return Refreshed(functools.partial(workers_by_queue, dispatcher.app, 1.0), _WORKERS_TTL_S)


def _workers_seen(svc: Services) -> dict[str, Any]:
    """``/health``'s ``workers``: the last answer of whether a worker consumes the predict queue (no I/O)."""
    queue = svc.settings.predict_queue
    if svc.consumers is None:
        return {"queue": queue, "consumed": None, "checked_s_ago": None}
    svc.consumers.refresh_in_background()
    snap = svc.consumers.snapshot()
    seen: dict[str, Any] = {
        "queue": queue,
        "consumed": snap.consumed(queue),
        "checked_s_ago": None if snap.age_s is None else round(snap.age_s, 1),
    }
    if seen["consumed"] is False:
        seen["fix"] = no_worker_message(queue)
    return seen


def _rid(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


# --- error handlers ---------------------------------------------------------------------------------
def _validation_detail(errors: list[Any]) -> tuple[int, str]:
    if any(e.get("type") == "json_invalid" for e in errors):
        msg = next(e.get("ctx", {}).get("error", "") for e in errors if e.get("type") == "json_invalid")
        return (
            400,
            f"the request body is not valid JSON ({msg}). Fix: send a JSON object with Content-Type: application/json",
        )
    # Location and message only: the offending input may hold a password or a token.
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg', '')}" for e in errors[:5]
    ]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid request: " + "; ".join(parts) + more + ". Fix: send the body Label Studio's ML API defines"


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if is_dashboard_path(request.url.path) and exc.status_code in (404, 405):
            what = "no such page" if exc.status_code == 404 else f"{request.method} is not allowed here"
            return error_page(exc.status_code, what, f"The dashboard has no {request.url.path[:120]}. Start at /ui/.")
        if exc.status_code == 404:
            detail = f"no route {request.url.path}. Fix: the ML backend serves {', '.join(_ROUTES)}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(detail, _rid(request)), exc.status_code, headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
        code, detail = _validation_detail(list(errors))
        return JSONResponse(error_body(detail, _rid(request)), code)

    async def backend_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BackendError | StudioError)
        log = logger.error if exc.status_code >= 500 else logger.info
        log("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return JSONResponse(error_body(exc.message, _rid(request)), exc.status_code)

    async def queue_down(request: Request, exc: Exception) -> Response:
        # Redis (coordination state) or the broker cannot be reached: our fault, retry later.
        logger.error("%s %s: the queue is unreachable: %s", request.method, request.url.path, exc)
        detail = (
            f"the task queue is unreachable ({type(exc).__name__}). "
            "Fix: check that Redis runs and ASSISTANT_BROKER_URL points at it; then retry"
        )
        return JSONResponse(error_body(detail, _rid(request)), 503)

    app.add_exception_handler(redis.RedisError, queue_down)
    app.add_exception_handler(kombu.exceptions.OperationalError, queue_down)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(BackendError, backend_error)
    app.add_exception_handler(StudioError, backend_error)


# --- the app ----------------------------------------------------------------------------------------
def create_app(
    settings: BackendSettings | None = None,
    *,
    services: Services | None = None,
    **overrides: Any,
) -> FastAPI:
    """Build the ML backend app.

    Args:
        settings: The settings (default: the environment's, through ``BackendSettings()``).
        services: Prebuilt services; else built from ``settings`` and ``overrides``.
        **overrides: ``dispatcher``, ``state``, ``registry``, ``ledger``, ``metrics`` for
            :class:`Services` (tests inject fakes here).

    Returns:
        The app; ``app.state.services`` holds its services.
    """
    settings = settings or BackendSettings()
    svc = services or Services(settings, **overrides)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        svc.close()

    app = FastAPI(
        title="Labeling assistant ML backend",
        summary="Label Studio ML backend: open-vocabulary multi-label image tags",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = svc
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes, metrics=svc.metrics)
    _install_error_handlers(app)
    _add_routes(app, svc)
    mount_dashboard(app, svc.dashboard, svc.auth)
    return app


def _warn_demo(svc: Services, project: int | None) -> None:
    """Say once per project when the offline demo model serves it (its tags on real photos are noise)."""
    if project in svc.demo_warned:
        return
    svc.demo_warned.add(project)
    try:
        served = served_model(svc.registry, project)
    except Exception as exc:  # the version was read a moment ago; this is only a note
        logger.debug("could not describe the model serving project %s: %s", project, exc)
        return
    if served.demo:
        logger.warning("setup: project %s is served by %s. Fix: %s", project, DEMO_MODEL_WHAT, DEMO_MODEL_FIX)


def _basic_auth(svc: Services) -> Callable[..., None]:
    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        verdict = svc.auth.check_basic(authorization)
        if not verdict.ok:
            logger.info("refused: %s", verdict.reason)
            raise HTTPException(
                401,
                verdict.reason + ". Fix: use the credentials configured on the backend",
                {"WWW-Authenticate": _REALM},
            )

    return check


def _request_count(svc: Services, action: str, project: int) -> None:
    if not svc.webhooks.request_count(project):
        svc.metrics.webhook_events.labels(action, "count_not_queued").inc()


def _reply(request: Request, reply: WebhookReply) -> JSONResponse:
    return JSONResponse({**reply.body, "request_id": _rid(request)}, reply.status_code)


def _add_routes(app: FastAPI, svc: Services) -> None:
    auth = [Depends(_basic_auth(svc))]
    limiter: list[anyio.CapacityLimiter] = []

    @app.get("/health")
    @app.get("/", include_in_schema=False)
    async def health() -> dict[str, Any]:
        """Liveness: answers at once, whatever the workers are doing; says whether a worker consumes the queue."""
        return {"status": "UP", "model_class": MODEL_CLASS, "workers": _workers_seen(svc)}

    @app.post("/setup", dependencies=auth)
    def setup(body: SetupRequest) -> SetupResponse:
        """The model version for this project and labeling config (no waiting on workers)."""
        vocab = parse_label_config(body.label_config)
        version = vocab.model_version(checkpoint_version(svc.registry, body.project))
        try:
            svc.state.record_version(body.project, version)
        except Exception as exc:  # /versions only; never fail /setup (3 s budget) over it
            logger.warning("could not record the served version: %s", exc)
        logger.info("setup: project %s -> %s (%d labels)", body.project, version, len(vocab.labels))
        _warn_demo(svc, body.project)
        if svc.webhook_watch is not None:
            svc.webhook_watch.seen(body.project)  # in the background: /setup answers now, whatever it finds
        return SetupResponse(model_version=version)

    @app.post("/predict", dependencies=auth)
    async def predict(body: LSPredictRequest, request: Request) -> dict[str, Any]:
        """One result per task: inline within the budget, the rest finished in the background."""
        if not limiter:  # created on the event loop, once
            limiter.append(anyio.CapacityLimiter(svc.settings.predict_concurrency))
        run = functools.partial(svc.predictor.predict, body, _rid(request))
        answer = await anyio.to_thread.run_sync(run, limiter=limiter[0])
        if answer.warning:  # Label Studio reads `results` only; people and scripts read this
            return {"results": answer.results, "warning": answer.warning}
        return {"results": answer.results}

    @app.post("/webhook")
    def webhook(
        request: Request,
        payload: Annotated[dict[str, Any], Body()],
        token: Annotated[str | None, Query()] = None,
        x_assistant_token: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Record annotation events, queue START_TRAINING, ignore the rest; fast (LS waits 1 s)."""
        verdict = svc.auth.check_webhook(authorization, x_assistant_token or token)
        if not verdict.ok:
            logger.info("webhook refused: %s", verdict.reason)
            raise HTTPException(401, verdict.reason, {"WWW-Authenticate": _REALM})
        action = str(payload.get("action", "?"))[:64]
        try:
            reply = svc.webhooks.handle(payload, _rid(request))
        except Exception:
            svc.metrics.webhook_events.labels(action, "error").inc()
            raise
        svc.metrics.webhook_events.labels(action, reply.outcome).inc()
        response = _reply(request, reply)
        if reply.count is not None:
            # After the answer: Label Studio's 1 s never waits on the broker.
            response.background = BackgroundTask(_request_count, svc, action, reply.count)
        return response

    @app.post("/train", dependencies=auth)
    def train(request: Request, payload: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        """Legacy START_TRAINING (Label Studio < 1.12 posts the project's annotations here)."""
        try:
            project = parse_project_id(payload.get("project"))
        except ValueError as exc:
            raise BackendError(str(exc), fix='send "project": "<id>.<timestamp>"', status_code=422) from exc
        reply = svc.webhooks.start_round(project, _rid(request))
        svc.metrics.webhook_events.labels("TRAIN", reply.outcome).inc()
        return _reply(request, reply)

    @app.get("/versions", dependencies=auth)
    def versions(project: int | None = None) -> dict[str, list[str]]:
        """Versions ``/setup`` served (for the project, or all), newest first."""
        try:
            return {"versions": svc.state.served_versions(project)}
        except Exception as exc:
            raise BackendError("cannot read the served versions", why=str(exc), status_code=503) from exc

    @app.get("/metrics", dependencies=auth)
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
