"""How a project's predictions choose their tags: costs, its own calibration, the guard, caution.

:class:`ServingPolicy` is what :func:`backends.convert.predictions_from_results` applies to the
workers' probabilities, for one project and the checkpoint serving it:

1. **recalibration**: the project's latest refit for that checkpoint (``state.effort``) remaps
   each tag's probability (a tag without a map of its own, a novel one included, uses the pooled
   map); none before the first refit;
2. **the rule**: a tag is shown when its probability reaches the break-even point of the edit
   costs (``preannotation.rule``): the control's ``model_cost_*`` knobs, else the project's entry
   of ``ASSISTANT_PROJECT_EDIT_COSTS``, else ``ASSISTANT_EDIT_COST_ADD`` / ``_REMOVE``. An explicit
   ``model_threshold`` (on a ``<Choice>`` or its control) replaces the break-even point;
3. **the guard**: tags tripped under that checkpoint are never shown;
4. **caution**: a model whose calibration was never measured (the workers report the calibrator
   ``default``: a hub model) shows at most ``ASSISTANT_CONSERVATIVE_MAX_TAGS`` tags from
   ``ASSISTANT_CONSERVATIVE_THRESHOLD`` on, until the project's first refit;
5. the control's ``model_max_tags`` cap (most probable first).

:func:`load_policy` reads the store; when it cannot (the database is down), predictions are still
served, with the costs alone, and the failure is logged and counted
(``assistant_backend_policy_errors_total``): annotators must not wait on the effort ledger.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Final

from preannotation import EditCosts, Recalibration
from state.effort import EffortStore
from state.settings import Settings

__all__ = ["UNMEASURED_CALIBRATION", "ServedCalibrations", "ServingPolicy", "load_policy"]

logger = logging.getLogger(__name__)

#: The calibrator method of a model whose prior was never measured (``assistant.calibration``).
UNMEASURED_CALIBRATION: Final = "default"


@dataclass(frozen=True)
class ServingPolicy:
    """What decides the shown tags of one project's predictions (module docstring).

    Attributes:
        costs: The project's edit costs (a control's ``model_cost_*`` knobs override them).
        recalibration: The project's refit for the serving checkpoint, if any.
        recalibration_id: Its id (``r<seq>``), recorded in every prediction it served.
        suppressed: Tag keys the guard tripped: never shown.
        conservative_threshold: The least probability shown while the model's calibration is
            unmeasured and the project has no refit.
        conservative_max_tags: The most tags shown then.
    """

    costs: EditCosts = EditCosts()
    recalibration: Recalibration | None = None
    recalibration_id: str | None = None
    suppressed: frozenset[str] = frozenset()
    conservative_threshold: float = 0.8
    conservative_max_tags: int = 3

    def conservative(self, calibration: str) -> bool:
        """Whether predictions scored with ``calibration`` serve few, confident tags."""
        return calibration == UNMEASURED_CALIBRATION and self.recalibration is None


def load_policy(
    store: EffortStore | None, settings: Settings, project: int | None, checkpoint: str
) -> tuple[ServingPolicy, str | None]:
    """The project's policy for ``checkpoint`` (module docstring).

    Returns:
        The policy, and why the store could not be read (None when it was): the caller counts it.
    """
    base = ServingPolicy(
        costs=settings.edit_costs(project),
        conservative_threshold=settings.conservative_threshold,
        conservative_max_tags=settings.conservative_max_tags,
    )
    if store is None or project is None:
        return base, None
    try:
        refit = store.last_refit(project, checkpoint, fitted_only=True)
        suppressed = store.suppressed(project, checkpoint) if settings.guard_enabled else frozenset()
    except Exception as exc:  # a database outage must not stop predictions (module docstring)
        logger.warning("project %s: serving without its recalibration and guard: %s", project, exc)
        return base, f"{type(exc).__name__}: {exc}"
    return (
        ServingPolicy(
            costs=base.costs,
            recalibration=None if refit is None else refit.recalibration,
            recalibration_id=None if refit is None else refit.id,
            suppressed=suppressed,
            conservative_threshold=base.conservative_threshold,
            conservative_max_tags=base.conservative_max_tags,
        ),
        None,
    )


class ServedCalibrations:
    """Records, once per process, which kind of calibration a checkpoint serves a project with.

    ``assistant status`` reads it (``state.effort.EffortStore.serving``) to say that a model
    whose calibration was never measured is serving conservatively. A failed write is logged and
    tried again with the next prediction: it is for the status only.

    Args:
        store: The effort store (None: nothing is recorded).
    """

    def __init__(self, store: EffortStore | None) -> None:
        self.store = store
        self._done: set[tuple[int, str, str]] = set()
        self._lock = threading.Lock()

    def note(self, project: int | None, checkpoint: str, calibration: str) -> None:
        """Record ``calibration`` for ``(project, checkpoint)`` unless this process did already."""
        if self.store is None or project is None or not calibration:
            return
        key = (project, checkpoint, calibration)
        with self._lock:
            if key in self._done:
                return
        try:
            self.store.note_serving(project, checkpoint, calibration)
        except Exception as exc:  # the status's information only; predictions go on
            logger.warning("could not record the calibration served to project %s: %s", project, exc)
            return
        with self._lock:
            self._done.add(key)
