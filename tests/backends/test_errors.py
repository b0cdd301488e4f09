from __future__ import annotations

import pytest

from backends.errors import BackendError, TaskDataError, WorkerResultError
from errors import AssistantError


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (BackendError("bad input"), 400, "Bad input."),
        (BackendError("bad input", status_code=409), 409, "Bad input."),
        (TaskDataError("task 3 has no image", task_id=3), 422, "Task 3 has no image."),
        (WorkerResultError("labels differ"), 502, "Labels differ."),
    ],
)
def test_message_and_status(error: BackendError, status: int, text: str) -> None:
    assert error.status_code == status
    assert str(error) == error.message == text


def test_task_data_error_keeps_its_task_and_reason() -> None:
    err = TaskDataError("no image", task_id=7, reason="missing_data")
    assert (err.task_id, err.reason) == (7, "missing_data")
    assert isinstance(err, BackendError)


def test_backend_errors_derive_from_the_one_base_not_the_core() -> None:
    # The edge may not import `assistant` (torch); its errors share only the leaf base.
    assert issubclass(BackendError, AssistantError)
    assert all(not cls.__module__.startswith("assistant") for cls in BackendError.__mro__)
