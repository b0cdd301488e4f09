"""The round log: one JSON line per finished or failed round, ``<models_dir>/rounds/<project>/rounds.jsonl``.

``workers.rounds`` appends a line when a round ends: promoted, kept, skipped, or ``failed`` (with
its reason, the time and the version it tried to make). ``assistant round status``,
``assistant status``, the agent and the backend's ``/metrics`` read it here, the one reader, so
none of them needs the worker's heavy modules. A torn line (a process killed mid-write) is
skipped. Light on purpose: stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["append_round_log", "read_round_log", "round_log_path", "round_statuses"]

logger = logging.getLogger(__name__)


def round_log_path(models_dir: Path, project: int) -> Path:
    """``<models_dir>/rounds/<project>/rounds.jsonl``."""
    return models_dir / "rounds" / str(project) / "rounds.jsonl"


def read_round_log(models_dir: Path, project: int) -> list[dict[str, Any]]:
    """The project's finished and failed rounds, oldest first (torn or non-object lines skipped)."""
    path = round_log_path(models_dir, project)
    if not path.is_file():
        return []
    rounds: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            entry = json.loads(line) if line.strip() else None
            if isinstance(entry, dict):
                rounds.append(entry)
    return rounds


def append_round_log(models_dir: Path, project: int, entry: dict[str, Any]) -> None:
    """Append one round's line (one ``write`` of one line, so a reader sees it whole or torn)."""
    path = round_log_path(models_dir, project)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


def round_statuses(models_dir: Path) -> dict[int, Counter[str]]:
    """Every project's rounds counted by status (``failed`` included), for ``/metrics``."""
    root = models_dir / "rounds"
    if not root.is_dir():
        return {}
    out: dict[int, Counter[str]] = {}
    for folder in sorted(root.iterdir()):
        if folder.name.isdigit():
            project = int(folder.name)
            out[project] = Counter(str(e.get("status") or "unknown") for e in read_round_log(models_dir, project))
    return out
