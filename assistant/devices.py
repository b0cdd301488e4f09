"""Device and precision choices shared by inference and training."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_for", "default_batch_size", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None picks CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_for(device: torch.device, cpu_bf16: bool = False) -> contextlib.AbstractContextManager[None]:
    """Mixed precision where it pays: fp16 autocast on CUDA, optional bf16 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_batch_size(device: torch.device) -> int:
    """A batch size that fits the device: large on GPUs, small on 2-core CPUs."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # ~40 MB of activations per 224-px ViT-B image in fp16 inference, with a wide margin.
        return int(max(16, min(256, free // (160 * 1024 * 1024))))
    return 16
