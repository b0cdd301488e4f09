"""The one Label Studio HTTP client: a thin wrapper over ``label_studio_sdk``.

The backend writes predictions, views and task ranks through it; the CLI, the agent and the
rounds read projects, tasks, predictions and exports through it. Every call to Label Studio in
the project goes through :class:`LabelStudioClient`.

One SDK client per process (it refreshes personal access tokens under a lock and caches the
access token). The URL and key are always passed explicitly: the SDK would otherwise read
``LABEL_STUDIO_API_KEY`` at import and default to ``localhost:8000``. Tests inject an
``httpx.Client`` over ``httpx.MockTransport``.

Failures become :mod:`studio.errors`: :class:`~studio.errors.LabelStudioUnavailable` for what is
worth retrying (connection errors, timeouts, 429, 5xx; the publish task retries it), a
:class:`~studio.errors.LabelStudioError` carrying Label Studio's status for the rest (a wrong
token, a deleted task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.types import PredictionRequest

from studio.errors import LabelStudioError, LabelStudioUnavailable, StudioError
from studio.protocol import Prediction, Task

__all__ = ["LabelStudioClient", "as_dict", "is_labeled"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Tasks per page when listing a project (LS caps page_size; 1,000 keeps a 10,000-task project to
# ten requests of ~1 MB each).
_PAGE_SIZE = 1000


def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiError as exc:
        status = exc.status_code or 0
        detail = str(exc.body)[:300]
        if status == 429 or status >= 500:
            raise LabelStudioUnavailable(f"Label Studio answered {status} to {what}", why=detail) from exc
        fix = {
            401: "check ASSISTANT_LABEL_STUDIO_API_KEY (a legacy token needs legacy tokens enabled in LS)",
            403: "use the token of a user with access to the project",
            404: "check the project or task id",
        }.get(status, "check the request")
        raise LabelStudioError(f"Label Studio answered {status} to {what}", status=status, why=detail, fix=fix) from exc
    except httpx.HTTPError as exc:
        raise LabelStudioUnavailable(
            f"cannot reach Label Studio for {what}: {type(exc).__name__}",
            fix="check ASSISTANT_LABEL_STUDIO_URL and that Label Studio is running",
        ) from exc


def is_labeled(task: dict[str, Any]) -> bool:
    """Whether a listed task has an annotation (the agent, bulk pre-annotation and the CLI agree on it)."""
    return bool(task.get("total_annotations") or task.get("is_labeled"))


def as_dict(obj: Any) -> dict[str, Any]:
    """An SDK answer (a pydantic model) or a plain dict as a JSON dict."""
    if isinstance(obj, dict):
        return obj
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


class LabelStudioClient:
    """What the backend and the CLI need from Label Studio.

    Args:
        url: Label Studio's base URL.
        api_key: A legacy token or a personal access token (never logged).
        timeout: Seconds per request.
        max_retries: The SDK's own retries of 429/5xx answers, with backoff.
        httpx_client: An HTTP client to use instead of the SDK's own (tests).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        httpx_client: httpx.Client | None = None,
    ) -> None:
        if not api_key:
            raise StudioError(
                "no Label Studio API key is configured",
                fix="set ASSISTANT_LABEL_STUDIO_API_KEY (or LABEL_STUDIO_API_KEY) to an access token",
            )
        self.url = url.rstrip("/")
        try:
            self.sdk = LabelStudio(  # type: ignore[no-untyped-call]
                base_url=self.url, api_key=api_key, timeout=timeout, max_retries=max_retries, httpx_client=httpx_client
            )
        except ApiError as exc:  # the SDK checks a personal access token's expiry as it starts
            raise LabelStudioError(
                "the Label Studio API key is a personal access token Label Studio cannot accept",
                status=401,
                why=str(exc.body)[:300],
                fix="create a new token in Label Studio (Account & Settings) and set ASSISTANT_LABEL_STUDIO_API_KEY",
            ) from exc

    # --- reading ----------------------------------------------------------------------------------
    def label_config(self, project: int) -> str:
        """The project's labeling config XML."""
        found = _call(f"GET project {project}", lambda: self.sdk.projects.get(id=project))
        return str(found.label_config or "")

    def task_count(self, project: int) -> int | None:
        """How many tasks the project has (``task_number``), None when Label Studio does not say."""
        found = _call(f"GET project {project}", lambda: self.sdk.projects.get(id=project))
        count = getattr(found, "task_number", None)
        return None if count is None else int(count)

    def tasks(self, project: int, *, unlabeled_only: bool = False) -> list[Task]:
        """Every task of a project (id and data), optionally only those without annotations."""

        return [
            Task(id=int(task["id"]), data=task.get("data") or {}, project=project)
            for task in self.task_rows(project)
            if not (unlabeled_only and is_labeled(task))
        ]

    def project(self, project: int) -> dict[str, Any]:
        """One project as Label Studio serializes it (title, config, counters)."""
        return as_dict(_call(f"GET project {project}", lambda: self.sdk.projects.get(id=project)))

    def projects(self) -> list[dict[str, Any]]:
        """Every project the token can see."""

        def fetch() -> list[dict[str, Any]]:
            pager: Iterable[Any] = self.sdk.projects.list(page_size=100)
            return [as_dict(raw) for raw in pager]

        return _call("GET projects", fetch)

    def task_rows(self, project: int, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The project's tasks as Label Studio lists them (``task_only``: id, data, counters).

        Args:
            project: The project.
            limit: Stop after this many tasks (one page when small); every task when None.
        """

        def fetch() -> list[dict[str, Any]]:
            size = _PAGE_SIZE if limit is None else max(1, min(limit, _PAGE_SIZE))
            pager: Iterable[Any] = self.sdk.tasks.list(project=project, fields="task_only", page_size=size)
            out = []
            for raw in pager:
                out.append(as_dict(raw))
                if limit is not None and len(out) >= limit:
                    break
            return out

        return _call(f"GET tasks of project {project}", fetch)

    def predictions(self, project: int) -> list[dict[str, Any]]:
        """Every prediction of the project (one request): id, task, result, model_version, created_at."""

        def fetch() -> list[dict[str, Any]]:
            return [pred for pred in map(as_dict, self.sdk.predictions.list(project=project)) if pred.get("task")]

        return _call(f"GET predictions of project {project}", fetch)

    def export(self, project: int, *, wait_s: int = 300) -> list[dict[str, Any]]:
        """The project's tasks with their annotations (``projects.exports.as_json``), for rounds.

        Args:
            project: The project.
            wait_s: How long to wait for Label Studio to build the export (a large project's
                takes a while; the SDK's default is 60 s).
        """

        def fetch() -> list[dict[str, Any]]:
            exported: list[dict[str, Any]] = self.sdk.projects.exports.as_json(project, timeout=wait_s)
            return exported

        return _call(f"export project {project}", fetch)

    def ml_backends(self, project: int) -> list[dict[str, Any]]:
        """The ML backends connected to the project."""
        found = _call(f"GET ML backends of project {project}", lambda: self.sdk.ml.list(project=project))
        return [as_dict(m) for m in found or []]

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        """The project's webhooks (older servers list the organisation's: filter by ``project``)."""
        found = _call(f"GET webhooks of project {project}", lambda: self.sdk.webhooks.list(project=str(project)))
        return [as_dict(h) for h in found or []]

    def views(self, project: int) -> list[dict[str, Any]]:
        """The project's saved Data Manager views (tabs)."""
        found = _call(f"GET views of project {project}", lambda: self.sdk.views.list(project=project))
        return [as_dict(v) for v in found or []]

    def prediction_versions(self, project: int) -> dict[int, set[str]]:
        """Task id → the model versions it already has predictions for (one request per project)."""
        out: dict[int, set[str]] = {}
        for pred in self.predictions(project):
            if pred.get("task") is not None:
                out.setdefault(int(pred["task"]), set()).add(str(pred.get("model_version") or ""))
        return out

    def prediction(self, prediction: int) -> dict[str, Any] | None:
        """One prediction (``GET /api/predictions/{id}/``): id, task, result, model_version, created_at.

        Returns:
            The prediction, or None when Label Studio has no such prediction (404).
        """
        try:
            found = _call(f"GET prediction {prediction}", lambda: self.sdk.predictions.get(id=prediction))
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise
        return as_dict(found)

    def task_predictions(self, task: int) -> list[dict[str, Any]]:
        """Every prediction of one task, as Label Studio lists them (creation order)."""
        found = _call(f"GET predictions of task {task}", lambda: self.sdk.predictions.list(task=task))
        return [as_dict(p) for p in found]

    def task_prediction_versions(self, task: int) -> set[str]:
        """The model versions one task already has predictions for."""
        found = _call(f"GET predictions of task {task}", lambda: self.sdk.predictions.list(task=task))
        return {str(as_dict(p).get("model_version") or "") for p in found}

    # --- writing ----------------------------------------------------------------------------------
    def create_prediction(self, task: int, prediction: Prediction) -> int | None:
        """Store a prediction (``POST /api/predictions/``); returns its id.

        The result items keep their extra ``assistant`` key (per-tag scores and novel marks):
        Label Studio stores result items verbatim.

        Never retried here: the SDK would send the POST again after a dropped connection or a 5xx,
        also when Label Studio had stored the prediction before failing, and the task would get two.
        The caller retries instead, and checks first whether the prediction is there
        (``backends.tasks``).
        """
        result = [item.model_dump(mode="json", exclude_none=True) for item in prediction.result]
        created = _call(
            f"POST a prediction for task {task}",
            lambda: self.sdk.predictions.create(
                task=task,
                result=result,
                score=prediction.score,
                model_version=prediction.model_version,
                request_options={"max_retries": 0},
            ),
        )
        return getattr(created, "id", None)

    def update_task_data(self, task: int, data: dict[str, Any]) -> None:
        """Replace a task's ``data`` (PATCH replaces it as a whole: pass every key it had)."""
        _call(f"PATCH task {task}", lambda: self.sdk.tasks.update(id=str(task), data=data))

    def create_view(self, project: int, data: dict[str, Any]) -> int:
        """Save a Data Manager view (tab); returns its id."""
        created = _call(f"POST a view to project {project}", lambda: self.sdk.views.create(project=project, data=data))
        return int(as_dict(created)["id"])

    def update_view(self, project: int, view: int, data: dict[str, Any]) -> None:
        """Replace a saved view's ``data`` (title, filters, ordering)."""
        _call(f"PATCH view {view}", lambda: self.sdk.views.update(id=str(view), project=project, data=data))

    def update_prediction(self, prediction_id: int, prediction: Prediction) -> None:
        """Replace a stored prediction's result, score and version in place (``PATCH /api/predictions/{id}/``).

        Its id and creation time stay, so an annotation that starts from it later still names it
        (``parent_prediction``). Idempotent: sending the same content twice stores it once.
        """
        result = [item.model_dump(mode="json", exclude_none=True) for item in prediction.result]
        _call(
            f"PATCH prediction {prediction_id}",
            lambda: self.sdk.predictions.update(
                id=prediction_id, result=result, score=prediction.score, model_version=prediction.model_version
            ),
        )

    def import_predictions(self, project: int, predictions: Sequence[tuple[int, Prediction]]) -> int:
        """Store several predictions in one request (``POST /api/projects/{id}/import/predictions``).

        Label Studio bulk-inserts them, but then (LS 1.23, its default import path) refreshes the
        counters of *every* task of the project: one request costs ~0.3 s plus ~0.5 ms per task
        of the project. Never retried here, for the reason :meth:`create_prediction` gives.

        Args:
            project: The project all the tasks belong to.
            predictions: (task id, prediction) pairs.

        Returns:
            How many predictions Label Studio created.
        """
        request = [
            PredictionRequest(
                task=task,
                result=[item.model_dump(mode="json", exclude_none=True) for item in prediction.result],
                score=prediction.score,
                model_version=prediction.model_version,
            )
            for task, prediction in predictions
        ]
        answer = _call(
            f"POST {len(request)} predictions to project {project}",
            lambda: self.sdk.projects.import_predictions(
                id=project, request=request, request_options={"max_retries": 0}
            ),
        )
        created = int(getattr(answer, "created", None) or 0)
        if created != len(request):
            logger.warning("Label Studio created %d predictions of %d in project %s", created, len(request), project)
        return created
