"""A thin wrapper over ``label_studio_sdk`` for what the backend writes and the CLI reads.

One SDK client per process (it refreshes personal access tokens under a lock and caches the
access token). The URL and key are always passed explicitly: the SDK would otherwise read
``LABEL_STUDIO_API_KEY`` at import and default to ``localhost:8000``. Tests inject an
``httpx.Client`` over ``httpx.MockTransport``.

Failures become :class:`~backends.errors.BackendError`: :class:`LabelStudioUnavailable` for what
is worth retrying (connection errors, timeouts, 429, 5xx; the publish task retries it), a plain
``BackendError`` carrying Label Studio's status for the rest (a wrong token, a deleted task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.types import PredictionRequest

from backends.errors import BackendError
from backends.protocol import Prediction, Task

__all__ = ["LabelStudioClient", "LabelStudioUnavailable"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Tasks per page when listing a project (LS caps page_size; 1,000 keeps a 10,000-task project to
# ten requests of ~1 MB each).
_PAGE_SIZE = 1000


class LabelStudioUnavailable(BackendError):
    """Label Studio did not answer, or answered 429/5xx: worth retrying later."""

    default_status = 503


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
        raise BackendError(f"Label Studio answered {status} to {what}", why=detail, fix=fix, status_code=502) from exc
    except httpx.HTTPError as exc:
        raise LabelStudioUnavailable(
            f"cannot reach Label Studio for {what}: {type(exc).__name__}",
            fix="check ASSISTANT_LABEL_STUDIO_URL and that Label Studio is running",
        ) from exc


def _as_dict(obj: Any) -> dict[str, Any]:
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
            raise BackendError(
                "no Label Studio API key is configured",
                fix="set ASSISTANT_LABEL_STUDIO_API_KEY (or LABEL_STUDIO_API_KEY) to an access token",
            )
        self.url = url.rstrip("/")
        try:
            self.sdk = LabelStudio(  # type: ignore[no-untyped-call]
                base_url=self.url, api_key=api_key, timeout=timeout, max_retries=max_retries, httpx_client=httpx_client
            )
        except ApiError as exc:  # the SDK checks a personal access token's expiry as it starts
            raise BackendError(
                "the Label Studio API key is a personal access token Label Studio cannot accept",
                why=str(exc.body)[:300],
                fix="create a new token in Label Studio (Account & Settings) and set ASSISTANT_LABEL_STUDIO_API_KEY",
                status_code=401,
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

        def fetch() -> list[Task]:
            pager: Iterable[Any] = self.sdk.tasks.list(project=project, fields="task_only", page_size=_PAGE_SIZE)
            out = []
            for raw in pager:
                task = _as_dict(raw)
                if unlabeled_only and (task.get("total_annotations") or task.get("is_labeled")):
                    continue
                out.append(Task(id=int(task["id"]), data=task.get("data") or {}, project=project))
            return out

        return _call(f"GET tasks of project {project}", fetch)

    def prediction_versions(self, project: int) -> dict[int, set[str]]:
        """Task id → the model versions it already has predictions for (one request per project)."""

        def fetch() -> dict[int, set[str]]:
            out: dict[int, set[str]] = {}
            for raw in self.sdk.predictions.list(project=project):
                pred = _as_dict(raw)
                if pred.get("task") is not None:
                    out.setdefault(int(pred["task"]), set()).add(str(pred.get("model_version") or ""))
            return out

        return _call(f"GET predictions of project {project}", fetch)

    def predictions(self, project: int) -> list[dict[str, Any]]:
        """Every prediction of a project (one request): id, task, model_version, result, created_at."""

        def fetch() -> list[dict[str, Any]]:
            return [pred for pred in map(_as_dict, self.sdk.predictions.list(project=project)) if pred.get("task")]

        return _call(f"GET predictions of project {project}", fetch)

    def prediction(self, prediction: int) -> dict[str, Any] | None:
        """One prediction (``GET /api/predictions/{id}/``): id, task, result, model_version, created_at.

        Returns:
            The prediction, or None when Label Studio has no such prediction (404).
        """
        try:
            found = _call(f"GET prediction {prediction}", lambda: self.sdk.predictions.get(id=prediction))
        except LabelStudioUnavailable:
            raise
        except BackendError as exc:
            if "answered 404" in exc.message:
                return None
            raise
        return _as_dict(found)

    def task_predictions(self, task: int) -> list[dict[str, Any]]:
        """Every prediction of one task, as Label Studio lists them (creation order)."""
        found = _call(f"GET predictions of task {task}", lambda: self.sdk.predictions.list(task=task))
        return [_as_dict(p) for p in found]

    def task_prediction_versions(self, task: int) -> set[str]:
        """The model versions one task already has predictions for."""
        found = _call(f"GET predictions of task {task}", lambda: self.sdk.predictions.list(task=task))
        return {str(_as_dict(p).get("model_version") or "") for p in found}

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
