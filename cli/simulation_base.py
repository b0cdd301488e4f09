"""What the ``assistant simulate`` commands share: the base model, torch threads, pre-annotation options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from assistant.checkpoint import LoadedModel
    from benchworld.simulation.serving import ServingConfig
    from benchworld.world.config import WorldConfig

__all__ = ["AutomationBias", "Guard", "RefitEvery", "WorldVersion", "load_base", "serving_config", "world_of"]

#: ``--automation-bias``: the simulated annotator keeps a wrong shown tag with this probability.
AutomationBias = Annotated[
    float,
    typer.Option(
        "--automation-bias",
        min=0.0,
        max=1.0,
        help="Probability that the annotator keeps a wrong tag it was shown (a label error).",
    ),
]
#: ``--world``: which benchmark world the simulation plays (v1 stays reproducible by name).
WorldVersion = Annotated[
    str,
    typer.Option(
        "--world",
        help="World version: world-v2 (default: long tail, context, photo series, camera, an annotation team "
        "whose own error rates replace --automation-bias) or world-v1 (the flat world of the earlier figures).",
    ),
]
#: ``--refit-every``: annotations between two refits of the project's calibration.
RefitEvery = Annotated[
    int | None,
    typer.Option(
        "--refit-every",
        min=0,
        help="Annotations between two refits of the project's calibration (0: never; default: the simulation's).",
    ),
]
#: ``--guard/--no-guard``: the per-tag guard.
Guard = Annotated[
    bool, typer.Option("--guard/--no-guard", help="Stop showing tags annotators remove more often than it pays.")
]


def serving_config(refit_every: int | None, guard: bool) -> ServingConfig:
    """The product's pre-annotation rule with the command's refit interval (None: the default) and guard."""
    import dataclasses

    from benchworld.simulation.serving import ServingConfig

    default = ServingConfig()
    return dataclasses.replace(
        default,
        refit_every=default.refit_every if refit_every is None else refit_every,
        guard=default.guard if guard else None,
    )


def world_of(version: str) -> WorldConfig:
    """The world of a version, or a clear error for an unknown one."""
    from assistant.errors import ConfigError
    from benchworld.world.config import world_config

    try:
        return world_config(version)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message) from None


def load_base(source: str | None, threads: int) -> tuple[str, LoadedModel]:
    """Load ``source`` (default: the configured base model) after setting torch's thread count.

    Args:
        source: A model spec (``local-dir:DIR``, an open_clip name, ...), or None for the
            ``ASSISTANT_BASE_MODEL`` setting (the bundled offline model unless changed).
        threads: torch threads; 0 means ``ASSISTANT_TORCH_THREADS``, and if that is unset too,
            torch's default. On a busy 2-core machine one thread is ~3x faster than two
            fighting for the cores.

    Returns:
        The spec that was loaded, and the model.

    Raises:
        AssistantError: The model cannot be loaded (the message says how to fix it).
    """
    import torch

    from assistant.checkpoint import load_model
    from state.settings import get_settings

    settings = get_settings()
    if threads or settings.torch_threads:
        torch.set_num_threads(threads or settings.torch_threads)
    spec = source or settings.base_model
    return spec, load_model(spec)
