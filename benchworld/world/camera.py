"""World v2's project camera: a label-agnostic shift that pretraining never saw.

A team's photos come from its own cameras, not from the web: a colour cast, softer focus, sensor
noise, another exposure and JPEG artefacts. Every project image (the labelling pool, validation and
test) passes through this camera; pretraining images never do. Nothing here depends on the labels,
so the shift moves appearance only, as a real domain shift does (docs/benchmark.md measures the gap
it opens in the frozen model: zero-shot mAP on shifted against unshifted test images).

Cost at 64 px: about 0.3 ms an image (PIL blur and a JPEG round trip dominate).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from benchworld.world.draws import Draws

__all__ = ["CameraConfig", "apply_camera"]


@dataclass(frozen=True)
class CameraConfig:
    """The project camera (world v2's defaults; each is a common consumer-camera fault).

    Attributes:
        cast: Per-channel RGB gain of the camera's white balance (warm: red up, blue down).
        cast_jitter: Per-image SD of each channel's gain around ``cast`` (auto white balance drift).
        exposure_sd: SD of the per-image log exposure gain (about +-1/3 stop).
        gamma: Range of the per-image tone curve exponent.
        blur_sigma: Range of the Gaussian blur SD in pixels (focus, motion, a cheap lens).
        noise_sd: SD of the sensor noise in 0-255 units (on top of the scene's own).
        jpeg_quality: Range of the JPEG quality the camera saves at.
    """

    cast: tuple[float, float, float] = (1.12, 1.0, 0.8)
    cast_jitter: float = 0.04
    exposure_sd: float = 0.25
    gamma: tuple[float, float] = (0.8, 1.25)
    blur_sigma: tuple[float, float] = (0.4, 1.0)
    noise_sd: float = 6.0
    jpeg_quality: tuple[int, int] = (25, 60)


def apply_camera(image: NDArray[np.uint8], camera: CameraConfig, draws: Draws) -> NDArray[np.uint8]:
    """One image as the project camera records it.

    Args:
        image: ``(S, S, 3)`` uint8 RGB, as rendered.
        camera: The camera.
        draws: The image's own randomness (never shared with the scene, so scenes stay the same).

    Returns:
        The shifted ``(S, S, 3)`` uint8 RGB image.
    """
    gains = np.array(camera.cast) * (1.0 + camera.cast_jitter * np.array([draws.normal() for _ in range(3)]))
    exposure = float(np.exp(draws.normal(camera.exposure_sd)))
    gamma = draws.uniform(*camera.gamma)
    x = np.clip(image.astype(np.float32) / 255.0 * (gains * exposure).astype(np.float32), 0.0, 1.0) ** gamma
    pil = Image.fromarray((x * 255.0 + 0.5).astype(np.uint8))
    pil = pil.filter(ImageFilter.GaussianBlur(draws.uniform(*camera.blur_sigma)))
    noisy = np.asarray(pil, dtype=np.float32)
    if camera.noise_sd > 0:
        noisy = noisy + draws.rng.standard_normal(noisy.shape, dtype=np.float32) * np.float32(camera.noise_sd)
    pil = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    low, high = camera.jpeg_quality
    pil.save(buffer, format="JPEG", quality=low + draws.integer(high - low + 1))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()
