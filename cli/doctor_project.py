"""The project's checks of `assistant doctor`: its labeling config, its webhook, one of its images.

Each takes Label Studio's client and the project, and returns a
:class:`~cli.doctor_result.Check` (``cli/doctor_checks.py`` runs them in order, after the stack's).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING

from cli.doctor_result import Check

if TYPE_CHECKING:
    from celery import Celery

    from studio.client import LabelStudioClient
    from studio.controls import ProjectVocabulary

__all__ = ["check_config", "check_image", "check_webhook"]

_IMAGE = "an image, as a worker reads it"


def check_config(client: LabelStudioClient, project: int) -> tuple[Check, ProjectVocabulary | None]:
    """The labeling config has an image-tagging control the model can serve; also what the model ignores."""
    from studio.config import parse_label_config
    from studio.errors import StudioError

    try:
        config = client.label_config(project)
        vocab = parse_label_config(config)
    except StudioError as exc:
        return Check("config", "labeling config", "fail", exc.message, fix=exc.fix), None
    used = {c.name for c in vocab.active}
    ignored = [f"{c.name} (model_skip)" for c in vocab.controls if c.knobs.skip]
    ignored += _other_controls(config, {c.name for c in vocab.controls})
    detail = f"project {project}: {len(vocab.labels)} labels in {', '.join(sorted(used))}" + (
        f"; ignored: {', '.join(ignored)}" if ignored else ""
    )
    data = {"labels": len(vocab.labels), "ignored": ignored}
    return Check("config", "labeling config", "ok", detail, data=data), vocab


def check_webhook(client: LabelStudioClient, project: int) -> Check:
    """A model is connected, and the project's webhook sends it every annotation."""
    from backends.webhook_check import check_webhook as look
    from studio.errors import StudioError

    try:
        found = look(client, project)
    except StudioError as exc:
        return Check("webhook", "model and webhook", "fail", exc.message, fix=exc.fix)
    if found.problem is not None:
        return Check(
            "webhook", "model and webhook", "fail", found.problem.what, fix=found.problem.fix, data=found.to_json()
        )
    detail = f"model at {', '.join(found.model_urls)}; annotations go to {', '.join(found.matching)}"
    return Check("webhook", "model and webhook", "ok", detail, data=found.to_json())


def check_image(
    client: LabelStudioClient, project: int, vocab: ProjectVocabulary, app: Celery, *, timeout: float
) -> Check:
    """A worker reads and decodes the project's first task's image (``assistant.probe_image``: no model)."""
    from backends.convert import task_image_refs
    from backends.errors import BackendError
    from state.contracts import PROBE_IMAGE, ProbeRequest, ProbeResult
    from studio.errors import StudioError
    from studio.protocol import Task

    try:
        raw = next(iter(client.task_rows(project, limit=1)), None)
    except StudioError as exc:  # reported, not raised
        return Check("image", _IMAGE, "fail", f"cannot list the project's tasks: {exc}")
    if raw is None:
        return Check("image", _IMAGE, "skip", f"project {project} has no task yet: import images first")
    task = raw
    try:
        ref = task_image_refs(vocab, Task(id=int(task["id"]), data=task.get("data") or {}))[0]
    except BackendError as exc:
        return Check("image", _IMAGE, "fail", exc.message, fix=exc.fix)
    request = ProbeRequest(image=ref, request_id=f"doctor-{uuid.uuid4().hex[:12]}")
    handle = app.send_task(PROBE_IMAGE, kwargs=request.model_dump(mode="json"))
    try:
        result = ProbeResult.model_validate(handle.get(timeout=timeout))
    except Exception as exc:  # a timeout, or an old worker without the probe task
        return Check(
            "image",
            _IMAGE,
            "fail",
            f"no worker read task {ref.task_id}'s image within {timeout:.0f} s ({type(exc).__name__})",
            fix="restart the workers (an older worker lacks the probe), and check their log",
        )
    data = result.model_dump(mode="json") | {"task": ref.task_id, "url": ref.url}
    if result.error is not None:
        what = f"{result.worker} cannot read task {ref.task_id}'s image {ref.url}: {result.error.message}"
        return Check("image", _IMAGE, "fail", what, fix=_image_fix(ref.url, result.error.reason), data=data)
    where = f"from disk ({result.source})" if result.local else f"through Label Studio ({result.source or ref.url})"
    detail = f"{result.worker} read task {ref.task_id}'s image {where}: {result.width}x{result.height} pixels"
    if "/data/local-files/" in ref.url and not result.local:
        fix = (
            "set ASSISTANT_LABEL_STUDIO_LOCAL_FILES_ROOT to Label Studio's LOCAL_FILES_DOCUMENT_ROOT: the workers "
            "then read local files from disk instead of downloading each through Label Studio"
        )
        return Check("image", _IMAGE, "warn", detail, fix=fix, data=data)
    return Check("image", _IMAGE, "ok", detail, data=data)


def _other_controls(config: str, ours: set[str]) -> list[str]:
    """The config's controls the model does not serve (text tags, choices on other objects, ...)."""
    from label_studio_sdk.label_interface.interface import LabelInterface

    with contextlib.suppress(Exception):  # the config parsed a moment ago; this is only a listing
        return [f"{c.name} (<{c.tag}>)" for c in LabelInterface(config).controls or [] if c.name not in ours]
    return []


def _image_fix(url: str, reason: str) -> str:
    if "/data/local-files/" in url:
        return (
            "local files: set ASSISTANT_LABEL_STUDIO_LOCAL_FILES_ROOT to Label Studio's LOCAL_FILES_DOCUMENT_ROOT "
            "(the workers read the file there), or leave it unset so they download it through Label Studio; check "
            "the file exists under the Local Files storage's path"
        )
    if "/data/upload/" in url:
        return (
            "uploads: set ASSISTANT_LABEL_STUDIO_MEDIA_ROOT to Label Studio's media directory "
            "(<LABEL_STUDIO_BASE_DATA_DIR>/media), or leave it unset to download through Label Studio"
        )
    if reason == "forbidden_host":
        return "list the image host in ASSISTANT_MEDIA_ALLOWED_HOSTS (docs/workers.md, Images)"
    return "check the image URL in the task's data, and the worker's log"
