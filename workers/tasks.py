"""The model tasks: validate the payload, call one pipeline function, return the result as JSON.

Registered with ``shared_task`` so that any app built by :func:`workers.celery_app.make_celery`
with ``include=["workers.tasks"]`` serves them; callers send them by name
(``send_task(contracts.PREDICT, kwargs=request.model_dump(mode="json"))``) and never import this
module. The tasks are idempotent (the same request gives the same result, and the feature cache
ignores entries it already holds), which is what makes ``acks_late`` redelivery safe. Only
:class:`~workers.errors.TransientError` is retried; a bad payload or an unknown model version
fails at once, and a bad image is a per-image failure inside a successful result.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from celery import shared_task
from pydantic import BaseModel, ValidationError

from state.contracts import (
    EMBED,
    PREDICT,
    PROBE_IMAGE,
    SCORE_POOL,
    EmbedRequest,
    ImageFailure,
    PredictRequest,
    ProbeRequest,
    ProbeResult,
    ScorePoolRequest,
)
from workers import pipeline
from workers.errors import MediaError, RequestError, TransientError
from workers.images import decode_image
from workers.runtime import ModelTask

__all__ = ["embed", "predict", "probe_image", "score_pool"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Retry policy of transient failures: up to 3 retries, 2-60 s apart with jitter.
_RETRY: dict[str, Any] = {
    "autoretry_for": (TransientError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 3,
}


def _validate(model: type[M], payload: dict[str, Any]) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(
            f"the {model.__name__} payload is invalid",
            why=str(exc).replace("\n", "; "),
            fix=f"send {model.__name__}(...).model_dump(mode='json') as the task's keyword arguments",
        ) from None


@shared_task(bind=True, base=ModelTask, name=PREDICT, **_RETRY)  # type: ignore[untyped-decorator]
def predict(self: ModelTask, **payload: Any) -> dict[str, Any]:
    """Tag images with a vocabulary (:class:`~state.contracts.PredictRequest` fields as kwargs).

    Returns:
        A :class:`~state.contracts.PredictResult` as JSON.
    """
    request = _validate(PredictRequest, payload)
    return pipeline.predict(self.runtime, request).model_dump(mode="json")


@shared_task(bind=True, base=ModelTask, name=EMBED, **_RETRY)  # type: ignore[untyped-decorator]
def embed(self: ModelTask, **payload: Any) -> dict[str, Any]:
    """Fill the feature cache for images (:class:`~state.contracts.EmbedRequest` fields as kwargs).

    Returns:
        An :class:`~state.contracts.EmbedResult` as JSON.
    """
    request = _validate(EmbedRequest, payload)
    return pipeline.embed(self.runtime, request).model_dump(mode="json")


@shared_task(bind=True, base=ModelTask, name=SCORE_POOL, **_RETRY)  # type: ignore[untyped-decorator]
def score_pool(self: ModelTask, **payload: Any) -> dict[str, Any]:
    """Choose the pool images to label next (:class:`~state.contracts.ScorePoolRequest` fields as kwargs).

    Returns:
        A :class:`~state.contracts.ScorePoolResult` as JSON.
    """
    request = _validate(ScorePoolRequest, payload)
    return pipeline.score_pool(self.runtime, request).model_dump(mode="json")


@shared_task(bind=True, base=ModelTask, name=PROBE_IMAGE)  # type: ignore[untyped-decorator]
def probe_image(self: ModelTask, **payload: Any) -> dict[str, Any]:
    """Read and decode one image as a prediction would, without the model (``assistant doctor``).

    Returns:
        A :class:`~state.contracts.ProbeResult` as JSON; a failure is in its ``error``, not raised.
    """
    request = _validate(ProbeRequest, payload)
    ref = request.image
    fetcher = self.runtime.fetcher
    info = fetcher.source_info(ref)
    source = info.key if info is not None else ""
    result = ProbeResult(key=ref.key, worker=str(self.request.hostname or ""), source=source)
    try:
        data = fetcher.fetch(ref)
        image = decode_image(data, max_pixels=self.runtime.settings.media_max_pixels)
    except MediaError as exc:
        failure = ImageFailure(reason=exc.reason, message=exc.message)
        return result.model_copy(update={"error": failure}).model_dump(mode="json")
    local = bool(source) and not source.startswith(("http://", "https://"))
    update = {"local": local, "size_bytes": len(data), "width": image.width, "height": image.height}
    return result.model_copy(update=update).model_dump(mode="json")
