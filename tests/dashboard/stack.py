"""A live dashboard stack: the real backend process (``assistant serve``), real Redis, a recorded project.

The project is recorded in the stores the components write (``tests/dashboard/world.py``): the
registry, the round log and reports, the effort ledger, the decision log. Redis carries a round
lock and queued messages, so the Now page shows live state. Used by the browser tests and by
``benchmarks/bench_dashboard.py`` (with 1,000 rounds and 100,000 decisions).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from state.decision_log import open_decision_rows
from state.ledger import open_ledger
from state.locks import AgentLocks, RoundLocks
from state.registry import Registry
from tests.dashboard.world import PROJECT, World, build_small, decision_rows, write_decisions
from tests.integration.processes import Process, assistant, assistant_env, free_port, healthy, wait_for
from tests.integration.redis_namespace import RedisNamespace

REDIS_URL = "redis://127.0.0.1:6379/13"
USER, PASSWORD = "lead", "dashboard-test-pass"
LS_URL = "http://label-studio.invalid:8080"


@dataclass
class Stack:
    """A running backend over a recorded project."""

    url: str
    home: Path
    registry: Registry
    world: World
    redis: RedisNamespace
    backend: Process


def add_rounds(models_dir: Path, n: int) -> None:
    """Append ``n`` more rounds to project 3's round log (every seventh failed, every third refused)."""
    log = models_dir / "rounds" / str(PROJECT) / "rounds.jsonl"
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    lines = []
    for i in range(n):
        status = "failed" if i % 7 == 0 else ("kept" if i % 3 == 0 else "promoted")
        entry = {
            "project": PROJECT,
            "round_id": f"r{i + 100:04d}",
            "status": status,
            "promoted": status == "promoted",
            "candidate_version": None if status == "failed" else f"mkt-p3-r{i + 100:04d}",
            "trigger": "agent",
            "finished_at": (start + dt.timedelta(minutes=10 * i)).isoformat(timespec="seconds"),
            "metrics": {} if status == "failed" else {"mAP": 40.0 + (i % 10) / 10, "delta_mAP": (i % 5) - 2.0},
            "reason": "injected failure" if status == "failed" else "compared with the model in service",
        }
        if status == "failed":
            entry.update(error="RuntimeError", attempted_version=f"mkt-p3-r{i + 100:04d}")
        lines.append(json.dumps(entry, sort_keys=True) + "\n")
    with open(log, "a", encoding="utf-8") as fh:
        fh.writelines(lines)


def register_versions(registry: Registry, staging: Path, n: int) -> None:
    """Register ``n`` more versions of project 3 (one per extra round), as rounds register them."""
    from tests.dashboard.world import _checkpoint

    parent = "mkt-p3-r0001"
    for i in range(n):
        version = f"mkt-p3-r{i + 100:04d}"
        registry.register(
            _checkpoint(staging, version),
            parent=parent,
            project=PROJECT,
            round_id=f"r{i + 100:04d}",
            metrics={"mAP": 40.0 + (i % 10) / 10},
            move=True,
        )
        parent = version


@contextlib.contextmanager
def running_stack(
    tmp: Path, *, rounds: int = 0, versions: int = 0, decisions: int = 120, name: str = "dashboard"
) -> Iterator[Stack]:
    """Record the project, start the backend on a free port, yield; stop it and delete the Redis keys.

    Args:
        tmp: Where the home, the logs and the base model go.
        rounds: Rounds added to the three of the recorded project.
        versions: Versions registered for project 3 besides the recorded two.
        decisions: Decisions in the decision log (two rows each: pending, then done or failed).
        name: Goes into the Redis key prefix.
    """
    home = tmp / "home"
    base = tmp / "base-model"
    base.mkdir(parents=True, exist_ok=True)
    models_dir = home / "models"
    registry = Registry(models_dir, str(base))
    ledger = open_ledger(None, home=home)
    try:
        world = build_small(models_dir, registry, ledger)
    finally:
        ledger.close()
    if rounds:
        add_rounds(models_dir, rounds)
    if versions:
        register_versions(registry, tmp / "staging-extra", versions)
    open_decision_rows(None, home=home).close()  # creates the table, as the agent would
    for start in range(0, decisions, 10_000):
        write_decisions(home / "agent.sqlite3", decision_rows(PROJECT, min(10_000, decisions - start), start=start))
    ns = RedisNamespace(REDIS_URL, name)
    RoundLocks(ns.client, ns.prefix).acquire(PROJECT, "round r0004 on worker-1", 600)
    ns.client.set(AgentLocks(ns.client, ns.prefix).key(PROJECT), "agent@labeling-host:4242", ex=600)  # an agent runs it
    ns.client.rpush(f"{ns.prefix}predict", *[b"{}"] * 3)
    port = free_port()
    env = assistant_env(
        home=home,
        base_model=base,
        broker_url=REDIS_URL,
        prefix=ns.prefix,
        ls_url=LS_URL,
        ls_key="",
        BASIC_AUTH_USER=USER,
        BASIC_AUTH_PASSWORD=PASSWORD,
        LOG_LEVEL="WARNING",
    )
    backend = Process("backend", assistant("serve", "--port", str(port)), env, tmp / "backend.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the backend to answer /health", lambda: healthy(url), 90, backend)
        yield Stack(url, home, registry, world, ns, backend)
    finally:
        backend.stop()
        ns.close()
