"""What each dashboard page shows: typed view models built by pure functions from plain inputs.

No I/O here: ``dashboard/data.py`` reads the registry, the round log, the effort ledger, the
decision log and Redis; these functions turn what it read into what the templates print, so
every page's content is tested without services (``tests/dashboard/test_views.py``).

Pages (``docs/dashboard.md``): **Now** (:func:`now_view`), **Value** (:func:`value_view`),
**Rounds** (:func:`rounds_view`, :func:`round_detail`), **Agent** (:func:`agent_view`), **Queue
and review** (:func:`queue_view`).
"""

from dashboard.views.agent import AGENT_ACTIONS, AgentView, StoryRow, agent_view
from dashboard.views.common import PAGE_SIZE, VERSIONS_SHOWN, age
from dashboard.views.now import AgentCard, LockCard, ModelCard, NowView, now_view
from dashboard.views.queue import QueueItem, QueueView, queue_view, task_link
from dashboard.views.rounds import Page, RoundDetail, RoundRow, RoundsView, VersionRow, round_detail, rounds_view
from dashboard.views.value import Bar, TagRow, ValueView, VersionEffortRow, bars, value_view

__all__ = [
    "AGENT_ACTIONS",
    "PAGE_SIZE",
    "VERSIONS_SHOWN",
    "AgentCard",
    "AgentView",
    "Bar",
    "LockCard",
    "ModelCard",
    "NowView",
    "Page",
    "QueueItem",
    "QueueView",
    "RoundDetail",
    "RoundRow",
    "RoundsView",
    "StoryRow",
    "TagRow",
    "ValueView",
    "VersionEffortRow",
    "VersionRow",
    "age",
    "agent_view",
    "bars",
    "now_view",
    "queue_view",
    "round_detail",
    "rounds_view",
    "task_link",
    "value_view",
]
