"""What the effort ledger stores and returns: a counted annotation and its tags, totals, refits, the guard.

Plain frozen dataclasses (stdlib and :mod:`preannotation` only), written and read by
:class:`state.effort.EffortStore`; the tables are described there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from preannotation import EffortTotals, Recalibration, TagEffort, TaskEdits

__all__ = [
    "CountState",
    "CountedAnnotation",
    "EffortRow",
    "GuardEvent",
    "GuardState",
    "RefitRecord",
    "TagAnswer",
    "TagTotals",
    "VersionEffort",
    "checkpoint_of",
]


def checkpoint_of(model_version: str) -> str:
    """The checkpoint part of a Label Studio model version (``<checkpoint>+<fingerprint>``)."""
    return model_version.partition("+")[0]


@dataclass(frozen=True)
class TagAnswer:
    """One tag of one counted annotation.

    Attributes:
        tag: The target's key (a choice's output string, a taxonomy path joined with `` / ``).
        shown: The prediction selected it.
        present: The annotation has it.
        novel: The model in service had never trained on it (zero-shot).
        model_p: The model's own probability for it (None when the prediction kept no score).
        served_p: The probability served (after the project's recalibration).
    """

    tag: str
    shown: bool
    present: bool
    novel: bool = False
    model_p: float | None = None
    served_p: float | None = None


@dataclass(frozen=True)
class CountedAnnotation:
    """One annotation compared with the prediction its annotator started from.

    Attributes:
        annotation_id: The annotation.
        task: Its task.
        event_seq: The corrections-ledger row counted (its latest revision).
        prediction_id: The prediction compared against.
        source: ``parent`` (the annotation's ``parent_prediction``) or ``latest`` (the task's
            latest prediction before the annotation).
        model_version: That prediction's model version (``<checkpoint>+<fingerprint>``).
        calibration: The kind of calibration the model served it with (``platt``, ``prior``,
            ``default``; empty when the prediction does not say).
        recalibration: The project refit applied to it (``r<seq>``), None for none.
        answers: Per tag.
        annotated_at: When the annotation was made (Label Studio's time).
    """

    annotation_id: int
    task: int | None
    event_seq: int
    prediction_id: int | None
    source: Literal["parent", "latest"]
    model_version: str
    calibration: str = ""
    recalibration: str | None = None
    answers: tuple[TagAnswer, ...] = ()
    annotated_at: str | None = None

    @property
    def edits(self) -> TaskEdits:
        """Kept, removed and added tags."""
        return TaskEdits.compare(
            shown=[a.tag for a in self.answers if a.shown], final=[a.tag for a in self.answers if a.present]
        )


@dataclass(frozen=True)
class TagTotals:
    """One tag's counts (over the model versions asked for).

    Attributes:
        tag: The tag.
        novel: Novel for the model version(s) counted (True when novel in any of them).
        effort: Kept, removed, added.
    """

    tag: str
    novel: bool
    effort: TagEffort


@dataclass(frozen=True)
class VersionEffort:
    """The effort of annotations whose prediction came from one model version.

    Attributes:
        model_version: The Label Studio model version.
        checkpoint: Its checkpoint part.
        totals: Tasks, kept, removed, added, tasks that cost more than from scratch.
        first_at: The first such annotation's time.
        last_at: The last one's.
    """

    model_version: str
    checkpoint: str
    totals: EffortTotals
    first_at: str | None
    last_at: str | None


@dataclass(frozen=True)
class EffortRow:
    """One counted annotation as stored (keyset pages of :meth:`EffortStore.page`)."""

    seq: int
    annotation_id: int
    task: int | None
    prediction_id: int | None
    source: str
    model_version: str
    calibration: str
    recalibration: str | None
    kept: int
    removed: int
    added: int
    costlier: bool
    annotated_at: str | None
    counted_at: str


@dataclass(frozen=True)
class CountState:
    """How far a project's annotations are counted, and what went wrong last.

    Attributes:
        counted_through: The last corrections-ledger ``seq`` counted.
        counted: Annotation revisions counted.
        skipped: Not counted, by reason: ``cancelled`` (skipped tasks), ``unpredicted`` (no
            prediction to compare with: labeled from scratch), ``failed`` (unreadable).
        failures: Failed counting passes in a row (0 after a pass that went through).
        error: The last failure, for people (None after a pass that went through).
        error_at: When it happened.
        updated_at: The last pass.
    """

    counted_through: int = 0
    counted: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    failures: int = 0
    error: str | None = None
    error_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class RefitRecord:
    """One refit of a project's calibration.

    Attributes:
        id: ``r<seq>``: what predictions record as their ``recalibration``.
        checkpoint: The checkpoint whose probabilities it maps.
        status: ``fitted`` or ``failed``.
        recalibration: The maps (None when it failed).
        answers: (probability, answer) pairs it was fitted on.
        annotations: Annotations counted for the checkpoint when it was fitted.
        through_seq: The last ``effort`` row it saw (the next refit counts new annotations after it).
        error: Why it failed.
        at: When.
    """

    id: str
    checkpoint: str
    status: Literal["fitted", "failed"]
    recalibration: Recalibration | None
    answers: int
    annotations: int
    through_seq: int
    error: str | None
    at: str


@dataclass(frozen=True)
class GuardState:
    """The guard's state of one tag in one project.

    Attributes:
        tag: The tag.
        state: ``active`` (shown by the rule) or ``tripped`` (never shown).
        checkpoint: The checkpoint its counts belong to; a tripped tag resumes under another one.
        kept_base: Kept showings (in the totals) before its current judgement started.
        removed_base: Removed showings before it.
        since_seq: The last ``effort_answers`` row before its current judgement started.
        recalibration: The refit in service when it tripped.
        reason: The last verdict, for people.
        changed_at: When the state last changed.
    """

    tag: str
    state: Literal["active", "tripped"]
    checkpoint: str
    kept_base: int = 0
    removed_base: int = 0
    since_seq: int = 0
    recalibration: str | None = None
    reason: str = ""
    changed_at: str = ""


@dataclass(frozen=True)
class GuardEvent:
    """A trip or a resumption (``guard_events``), for the agent's decision log and the status."""

    seq: int
    project: int
    tag: str
    event: Literal["tripped", "resumed"]
    checkpoint: str
    kept: int
    removed: int
    reason: str
    at: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "seq": self.seq,
            "tag": self.tag,
            "event": self.event,
            "checkpoint": self.checkpoint,
            "kept": self.kept,
            "removed": self.removed,
            "reason": self.reason,
            "at": self.at,
        }
