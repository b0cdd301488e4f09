"""A subprocess agent over the fake world (tests/agent/test_restart.py kills it mid-action).

Usage: ``python -m tests.agent._agent_proc <dir> <block_on or ->``: one step of project 3 with the
decision log ``<dir>/agent.sqlite3``, the world ``<dir>/world.json`` and the actions file
``<dir>/actions.txt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.decision_log import open_decision_log
from agent.loop import Agent
from assistant.agent_policy import Policy
from tests.agent._fakes import WorldExecutor, WorldLooker


def main(directory: str, block_on: str) -> None:
    root = Path(directory)
    log = open_decision_log(None, home=root)
    world = root / "world.json"
    executor = WorldExecutor(world, root / "actions.txt", block_on=None if block_on == "-" else block_on)
    agent = Agent(Policy(), WorldLooker(world, log), executor, log)
    agent.step(3)
    log.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
