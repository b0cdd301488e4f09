from __future__ import annotations

import pickle

import pytest

from errors import AssistantError
from studio.errors import LabelConfigError, LabelStudioError, LabelStudioUnavailable, StudioError


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (StudioError("no key"), 400, "No key."),
        (LabelConfigError("no image.", why="none found", fix="add one"), 422, "No image. None found. Fix: Add one."),
        (LabelStudioError("Label Studio answered 404", status=404), 502, "Label Studio answered 404."),
        (LabelStudioUnavailable("cannot reach Label Studio"), 503, "Cannot reach Label Studio."),
    ],
)
def test_message_and_status(error: StudioError, status: int, text: str) -> None:
    assert error.status_code == status
    assert str(error) == error.message == text
    # Rounds raise them in a worker: they cross Celery by pickle with their fields.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.message, copy.status_code) == (error.message, error.status_code)
    assert isinstance(error, AssistantError)


def test_label_studio_error_keeps_the_status_after_pickling() -> None:
    copy = pickle.loads(pickle.dumps(LabelStudioError("refused", status=401)))
    assert copy.status == 401
