"""The base model of the ``assistant simulate`` commands, and the torch threads they run on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.checkpoint import LoadedModel

__all__ = ["load_base"]


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
    from workers.settings import get_settings

    settings = get_settings()
    if threads or settings.torch_threads:
        torch.set_num_threads(threads or settings.torch_threads)
    spec = source or settings.base_model
    return spec, load_model(spec)
