"""The one error base: its message shape, and every tree under it surviving a pickle round trip."""

from __future__ import annotations

import pickle

import pytest

from assistant.errors import CheckpointError, ConfigError, DataError
from backends.errors import BackendError, TaskDataError
from errors import AssistantError
from preannotation.costs import PreannotationError
from state.decision_log import DecisionLogError
from state.ledger import LedgerError
from state.registry import RegistryError
from studio.errors import LabelConfigError, LabelStudioError, LabelStudioUnavailable
from workers.errors import MediaError, WorkerError


def test_message_is_what_why_fix_as_sentences() -> None:
    err = AssistantError("cannot read x.json.", why="it is empty", fix="write it again")
    assert str(err) == err.message == "Cannot read x.json. It is empty. Fix: Write it again."
    assert (err.what, err.why, err.fix) == ("cannot read x.json.", "it is empty", "write it again")


def test_why_and_fix_are_optional() -> None:
    assert str(AssistantError("no model")) == "No model."
    assert str(AssistantError("no model", fix="train one")) == "No model. Fix: Train one."


_EVERY_TREE = [
    AssistantError("base", why="w", fix="f"),
    ConfigError("bad setting", fix="set it"),
    CheckpointError("corrupt", why="bad magic"),
    DataError("cannot decode", why="truncated file", fix="re-upload"),
    WorkerError("worker", fix="restart"),
    RegistryError("unknown version v9", fix="list versions"),
    MediaError("timed out", reason="timeout", why="slow host"),
    BackendError("edge", status_code=409),
    LabelConfigError("no image", fix="add <Image>"),
    LabelStudioError("Label Studio answered 404", status=404),
    LabelStudioUnavailable("cannot reach Label Studio"),
    TaskDataError("task 3 has no image", task_id=3, reason="missing_data"),
    LedgerError("cannot open the ledger", fix="check the URL"),
    DecisionLogError("cannot open the decision log", why="refused"),
    PreannotationError("cost must be positive", fix="use 1"),
    LabelStudioError("Label Studio answered 404", status=404, why="no such project"),
    LabelStudioUnavailable("cannot reach Label Studio", fix="start it"),
]


@pytest.mark.parametrize("err", _EVERY_TREE, ids=lambda e: type(e).__name__)
def test_every_tree_derives_from_the_base_and_survives_pickling(err: AssistantError) -> None:
    assert isinstance(err, AssistantError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert (back.what, back.why, back.fix, str(back)) == (err.what, err.why, err.fix, str(err))
    # Extra attributes (an HTTP status, a media reason, a task id) come along.
    assert back.__dict__ == err.__dict__


def test_extra_attributes_survive_pickling() -> None:
    back = pickle.loads(pickle.dumps(TaskDataError("no image", task_id=7, reason="missing_data", status_code=400)))
    assert (back.task_id, back.reason, back.status_code) == (7, "missing_data", 400)
    media = pickle.loads(pickle.dumps(MediaError("gone", reason="not_found")))
    assert media.reason == "not_found"


def test_preannotation_error_is_still_a_value_error() -> None:
    with pytest.raises(ValueError, match="Fix: Use 1"):
        raise PreannotationError("cost must be positive", fix="use 1")
