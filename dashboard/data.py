"""Where the dashboard's figures come from: small data-access functions over the project's stores.

Each page reads through :class:`DashboardData`, never the stores directly, so a store that moves
(as the light ones did from ``workers/`` to ``state/``) changes imports here and nowhere else.
Everything is read on demand and cheaply: the registry's files, the round log (one JSON line per
round, re-parsed only when the file changed), the effort ledger's stored totals, one page of the
decision log, a few Redis keys. The one slow source, the Celery broadcast that finds the workers
online, is read in the background (:class:`Refreshed`), so a page never waits for it; the backend
injects that read (``backends.presence.workers_by_queue``, its one question to Celery about workers).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import redis

from preannotation import EditCosts
from state.decision_log import DecisionRows
from state.effort_summary import project_effort
from state.ledger import Ledger
from state.locks import AgentLocks, RoundLocks
from state.metrics import QueueDepths
from state.registry import PromotionEvent, Registry, VersionRecord
from state.round_log import read_round_log, round_log_path

__all__ = ["DashboardData", "Refreshed", "ReportFiles", "RoundLog"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Round ids and report file names that may be served (no path separators, no leading dot).
SAFE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REPORT_FILE: Final = "report.md"
# The file the agent touches at every step (cli/agent.py's ALIVE_FILE; the web tier cannot import the CLI).
AGENT_ALIVE_FILE: Final = "agent-alive"


class Refreshed(Generic[T]):
    """A value read in a background thread at most every ``ttl_s``; readers get the last one at once.

    Args:
        read: The slow read.
        ttl_s: How old the value may get before a new read starts.
    """

    def __init__(self, read: Callable[[], T], ttl_s: float) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: T | None = None
        self._error: str | None = None
        self._at = 0.0
        self._busy = False

    def get(self) -> tuple[T | None, float | None, str | None]:
        """``(value, its age in seconds, the last read's error)``; ``(None, None, None)`` before the first read."""
        with self._lock:
            stale = time.monotonic() - self._at > self._ttl_s
            if stale and not self._busy:
                self._busy = True
                threading.Thread(target=self._refresh, name="dashboard-refresh", daemon=True).start()
            age = None if self._at == 0.0 else time.monotonic() - self._at
            return self._value, age, self._error

    def _refresh(self) -> None:
        try:
            value, error = self._read(), None
        except Exception as exc:  # shown on the page, never raised into a request
            value, error = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if error is None:
                self._value = value
            self._error = error
            self._at = time.monotonic()
            self._busy = False


class RoundLog:
    """A project's round log (``<models_dir>/rounds/<project>/rounds.jsonl``), parsed again only when it changed."""

    def __init__(self, models_dir: Path) -> None:
        self._models_dir = models_dir
        self._cache: dict[int, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def path(self, project: int) -> Path:
        """The file (:func:`state.round_log.round_log_path`)."""
        return round_log_path(self._models_dir, project)

    def entries(self, project: int) -> list[dict[str, Any]]:
        """Every finished round, oldest first; torn lines skipped."""
        path = self.path(project)
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(project)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        out = read_round_log(self._models_dir, project)  # the one reader: torn lines skipped
        with self._lock:
            self._cache[project] = (stamp, out)
        return out


@dataclass(frozen=True)
class ReportFiles:
    """A round's report folder: its Markdown (None when missing) and its file names."""

    folder: Path
    markdown: str | None
    files: list[str]


@dataclass
class DashboardData:
    """The data-access functions of every page.

    Attributes:
        registry: The model registry.
        ledger: The corrections ledger (with its effort store).
        decisions: The decision log (read, and the dashboard's audit rows).
        models_dir: The registry directory (round log and reports live under it).
        costs: A project's edit costs.
        label_studio_url: Label Studio's URL, for the links that open a task.
        redis_client: The state's Redis (round and agent locks); None: not shown.
        redis_prefix: ``Settings.redis_key_prefix``.
        queues: Reads the broker's queue depths; None: not shown.
        workers: The workers online per queue, refreshed in the background; None: not shown.
        home: ``Settings.home`` (where a local agent touches its alive file); None: not read.
    """

    registry: Registry
    ledger: Ledger
    decisions: DecisionRows
    models_dir: Path
    costs: Callable[[int], EditCosts]
    label_studio_url: str
    redis_client: redis.Redis | None = None
    redis_prefix: str = ""
    queues: Callable[[], QueueDepths] | None = None
    workers: Refreshed[dict[str, list[str]]] | None = None
    home: Path | None = None
    round_log: RoundLog = field(init=False)
    _versions_cache: tuple[int, list[VersionRecord]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.round_log = RoundLog(self.models_dir)

    # --- projects ---------------------------------------------------------------------------------
    def projects(self) -> list[int]:
        """Projects the assistant knows: in the registry, the round log, the ledgers or the decision log."""
        found: set[int] = set()
        for folder in ("projects", "rounds", "reports"):
            root = self.models_dir / folder
            if root.is_dir():
                found.update(int(p.name) for p in root.iterdir() if p.name.isdigit())
        found.update(self.ledger.projects())
        found.update(self.ledger.effort.projects())
        found.update(self.decisions.projects())
        return sorted(found)

    def known(self, project: int) -> bool:
        """Whether the assistant knows the project (:meth:`projects`), answered by the cheapest source first."""
        if any((self.models_dir / folder / str(project)).is_dir() for folder in ("projects", "rounds", "reports")):
            return True
        if self.decisions.has(project):
            return True
        return project in self.ledger.effort.projects() or project in self.ledger.projects()

    # --- the model ---------------------------------------------------------------------------------
    def current(self, project: int) -> VersionRecord:
        """The version serving the project."""
        return self.registry.current(project)

    def history(self, project: int) -> list[PromotionEvent]:
        """Promotions and rollbacks, oldest first."""
        return self.registry.history(project)

    def versions(self, project: int) -> list[VersionRecord]:
        """The project's registered versions, oldest first (re-read only when a version was added)."""
        root = self.models_dir / "versions"
        try:
            stamp = root.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._versions_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, self.registry.list_versions())
            self._versions_cache = cached
        key = str(project)
        return [v for v in cached[1] if v.project == key]

    def can_roll_back(self, project: int) -> bool:
        """The project has a pointer (a promotion to undo)."""
        return (self.models_dir / "projects" / str(project) / "current.json").is_file()

    # --- rounds ------------------------------------------------------------------------------------
    def rounds(self, project: int) -> list[dict[str, Any]]:
        """The round log, oldest first."""
        return self.round_log.entries(project)

    def report_ids(self, project: int) -> set[str]:
        """Rounds with a report folder."""
        root = self.models_dir / "reports" / str(project)
        return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()

    def report(self, project: int, round_id: str) -> ReportFiles | None:
        """A round's report folder, or None when the round id is not a safe name or has no folder."""
        if not SAFE_NAME.match(round_id):
            return None
        folder = self.models_dir / "reports" / str(project) / round_id
        if not folder.is_dir():
            return None
        md = folder / _REPORT_FILE
        text = md.read_text(encoding="utf-8") if md.is_file() else None
        return ReportFiles(folder, text, sorted(p.name for p in folder.iterdir() if p.is_file()))

    def report_file(self, project: int, round_id: str, name: str) -> Path | None:
        """One file of a round's report (a plot), or None when the names are unsafe or it is missing."""
        if not (SAFE_NAME.match(round_id) and SAFE_NAME.match(name)):
            return None
        path = self.models_dir / "reports" / str(project) / round_id / name
        return path if path.is_file() else None

    def latest_plot(self, project: int, name: str = "effort.png") -> tuple[str, str] | None:
        """``(round id, file name)`` of the newest round report that has the plot ``name``."""
        for entry in reversed(self.rounds(project)):
            round_id = str(entry.get("round_id") or "")
            if round_id and self.report_file(project, round_id, name) is not None:
                return round_id, name
        return None

    # --- effort ------------------------------------------------------------------------------------
    def effort(self, project: int) -> dict[str, Any]:
        """``state.effort_summary.project_effort`` for the version in service, with the per-tag figures."""
        try:
            checkpoint: str | None = self.registry.current(project).version
        except Exception:  # an unreadable registry still leaves the counts to show
            checkpoint = None
        return project_effort(self.ledger, project, checkpoint, self.costs(project), tags=True)

    # --- Redis: locks and queues -------------------------------------------------------------------
    def round_lock(self, project: int) -> tuple[str | None, float | None]:
        """``(holder, seconds left)`` of the project's round lock; ``(None, None)`` when free or unknown."""
        if self.redis_client is None:
            return None, None
        locks = RoundLocks(self.redis_client, self.redis_prefix)
        return locks.holder(project), locks.ttl_s(project)

    def agent_holder(self, project: int) -> str | None:
        """Who holds the project's agent lock (``state.locks.AgentLocks``' key), None when no agent runs it."""
        if self.redis_client is None:
            return None
        value = self.redis_client.get(AgentLocks(self.redis_client, self.redis_prefix).key(project))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def agent_alive_at(self) -> str | None:
        """When an agent on this machine last looked (``cli/agent.py``'s ``<home>/agent-alive``), ISO UTC.

        Only where the backend shares the agent's home (the local stack); None elsewhere.
        """
        if self.home is None:
            return None
        try:
            mtime = (self.home / AGENT_ALIVE_FILE).stat().st_mtime
        except OSError:
            return None
        return dt.datetime.fromtimestamp(mtime, dt.UTC).isoformat(timespec="seconds")

    def queue_depths(self) -> QueueDepths | None:
        """The broker's queues, or None when not configured."""
        return None if self.queues is None else self.queues()

    def workers_online(self) -> tuple[dict[str, list[str]] | None, str]:
        """Worker names per queue, with a note saying how fresh that is (or why it is unknown)."""
        if self.workers is None:
            return None, "not asked (no broker configured)"
        value, age, error = self.workers.get()
        if value is None:
            return None, f"could not ask the workers: {error}" if error else "asking the workers…"
        note = f"as of {age:.0f} s ago" if age is not None else ""
        if error:
            note += f" (the last check failed: {error})"
        return value, note
