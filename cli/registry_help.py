"""Option help built from the core's registries, so ``--help`` lists what is registered, never a copy.

The registries are light (``assistant.selection`` and ``assistant.backbones`` import numpy at
most, never torch), so building the help at import keeps ``assistant --help`` fast.
"""

from __future__ import annotations

from assistant.backbones import describe_backbone_kinds
from assistant.selection import describe_strategies, list_strategies

__all__ = ["backbone_spec_help", "strategy_help", "strategy_names"]


def strategy_names() -> str:
    """``diversity, entropy, ...``: the registered strategies."""
    return ", ".join(list_strategies())


def strategy_help() -> str:
    """Each registered strategy with what it favours."""
    return "One of: " + "; ".join(f"{name}: {favours}" for name, favours in describe_strategies().items()) + "."


def backbone_spec_help(default: str) -> str:
    """A model option's help: a checkpoint directory, or a spec of any registered backbone kind."""
    kinds = "; ".join(f"'{example}' ({summary})" for example, summary in describe_backbone_kinds().items())
    return f"An MKT checkpoint directory, or a backbone spec: {kinds} (default: {default})."
