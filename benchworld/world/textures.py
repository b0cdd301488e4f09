"""Procedural textures: the 12 scene backgrounds and the 8 surface patterns of objects.

Backgrounds are rendered once per generator into a bank (6 variants per scene at twice the image
size, plus their mirror images: 28 MB of float32 at 64 px) and each image crops and re-lights a
window of it, which costs tens of microseconds instead of milliseconds for a fresh texture.
Patterns are evaluated per object on its rotated local coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["SCENE_NAMES", "build_background_bank", "pattern_mask"]

_F = np.float32
F32 = NDArray[np.float32]

SCENE_NAMES: Final = (
    "grass", "sand", "water", "snow", "sky", "brick", "wood", "gravel", "carpet", "tiles", "asphalt", "mud",
)  # fmt: skip


def _smooth(rng: np.random.Generator, size: int, cells: int) -> F32:
    """Low-frequency noise in [0, 1]: a ``cells`` x ``cells`` grid upsampled bicubically."""
    grid = rng.random((cells, cells)).astype(_F)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img, dtype=_F), 0.0, 1.0)


def _mix(a: tuple[float, float, float], b: tuple[float, float, float], t: F32) -> F32:
    """Per-pixel blend of two RGB colours by ``t`` (H x W) -> H x W x 3."""
    ca, cb = np.asarray(a, dtype=_F), np.asarray(b, dtype=_F)
    return ca + (cb - ca) * t[..., None]


def _grass(rng: np.random.Generator, n: int, _s: float) -> F32:
    # Vertical blades: noise smeared along y (a 5-px running mean) on top of patchy shading.
    blades = rng.random((n + 6, n)).astype(_F)
    blades = np.cumsum(blades, axis=0)
    blades = (blades[5:-1] - blades[:-6]) / 5.0
    t = np.clip((blades - 0.5) * 3.0 + 0.5, 0, 1) * 0.6 + _smooth(rng, n, 6) * 0.4
    return _mix((40, 100, 30), (120, 185, 70), t)


def _sand(rng: np.random.Generator, n: int, s: float) -> F32:
    y, x = np.mgrid[0:n, 0:n].astype(_F)
    ripples = 0.5 + 0.5 * np.sin(x * 0.35 / s + y * 0.12 / s + 4 * _smooth(rng, n, 5))
    t = 0.5 * ripples + 0.5 * rng.random((n, n)).astype(_F)
    return _mix((190, 160, 105), (235, 212, 160), t)


def _water(rng: np.random.Generator, n: int, s: float) -> F32:
    y, x = np.mgrid[0:n, 0:n].astype(_F)
    waves = np.sin(y * 0.9 / s + 2.5 * np.sin(x * 0.15 / s + rng.uniform(0, 6)) + 3 * _smooth(rng, n, 5))
    t = np.clip(0.55 * _smooth(rng, n, 4) + 0.45 * (waves > 0.8), 0, 1)
    return _mix((25, 75, 140), (110, 170, 215), t)


def _snow(rng: np.random.Generator, n: int, _s: float) -> F32:
    t = 0.75 * _smooth(rng, n, 5) + 0.25 * rng.random((n, n)).astype(_F)
    img = _mix((200, 210, 228), (250, 250, 252), t)
    img[rng.random((n, n)) < 0.01] = (150, 155, 165)
    return img


def _sky(rng: np.random.Generator, n: int, _s: float) -> F32:
    y = np.linspace(0, 1, n, dtype=_F)[:, None] * np.ones((1, n), dtype=_F)
    img = _mix((95, 150, 225), (175, 210, 245), y)
    clouds = np.clip((_smooth(rng, n, 5) - 0.55) * 4.0, 0, 1)
    return img + (np.asarray((250, 250, 250), dtype=_F) - img) * clouds[..., None]


def _brick(rng: np.random.Generator, n: int, s: float) -> F32:
    bh, bw = max(3, round(5 * s)), max(6, round(11 * s))
    y, x = np.mgrid[0:n, 0:n]
    row = y // bh
    col = (x + (row % 2) * (bw // 2)) // bw
    shade = rng.uniform(0.8, 1.15, (row.max() + 1, col.max() + 1)).astype(_F)[row, col]
    img: F32 = np.asarray((160, 65, 45), dtype=_F) * shade[..., None]
    mortar = (y % bh == 0) | ((x + (row % 2) * (bw // 2)) % bw == 0)
    img[mortar] = (195, 190, 180)
    return img


def _wood(rng: np.random.Generator, n: int, s: float) -> F32:
    y, x = np.mgrid[0:n, 0:n].astype(_F)
    grain = 0.5 + 0.5 * np.sin(y * 1.1 / s + 5 * _smooth(rng, n, 4) + x * 0.02)
    img = _mix((115, 70, 35), (175, 120, 70), 0.6 * grain + 0.4 * _smooth(rng, n, 8))
    img[(y.astype(int) % max(8, round(14 * s))) == 0] *= 0.55  # plank joints
    return img


def _gravel(rng: np.random.Generator, n: int, s: float) -> F32:
    cell = max(2, round(3 * s))
    stones = rng.uniform(0.2, 1.0, (n // cell + 2, n // cell + 2)).astype(_F)
    t = np.kron(stones, np.ones((cell, cell), dtype=_F))
    dy, dx = rng.integers(0, cell, 2)
    t = t[dy : dy + n, dx : dx + n] * 0.8 + 0.2 * rng.random((n, n)).astype(_F)
    return _mix((70, 66, 62), (185, 178, 168), t)


def _carpet(rng: np.random.Generator, n: int, _s: float) -> F32:
    # Muted colours only (maroon, navy, beige, moss): carpet must not read as a colour label.
    base = [(110, 45, 50), (50, 58, 95), (150, 132, 110), (75, 90, 70)][int(rng.integers(4))]
    fibres = rng.random((n, n)).astype(_F)
    img: F32 = np.asarray(base, dtype=_F) * (0.75 + 0.45 * fibres[..., None])
    return img * (0.9 + 0.2 * _smooth(rng, n, 6))[..., None]


def _tiles(rng: np.random.Generator, n: int, s: float) -> F32:
    size = max(8, round(rng.uniform(11, 16) * s))
    base = [(222, 222, 212), (180, 208, 220), (225, 205, 190)][int(rng.integers(3))]
    y, x = np.mgrid[0:n, 0:n]
    shade = rng.uniform(0.92, 1.06, (n // size + 1, n // size + 1)).astype(_F)[y // size, x // size]
    img: F32 = np.asarray(base, dtype=_F) * shade[..., None]
    img[(y % size == 0) | (x % size == 0)] = (140, 140, 135)
    return img


def _asphalt(rng: np.random.Generator, n: int, s: float) -> F32:
    t = 0.6 * rng.random((n, n)).astype(_F) + 0.4 * _smooth(rng, n, 6)
    img = _mix((45, 45, 48), (105, 105, 108), t)
    if rng.random() < 0.5:  # a dashed lane marking
        y0 = int(rng.integers(n // 4, 3 * n // 4))
        x = np.arange(n)
        dash = (x // max(4, round(8 * s))) % 2 == 0
        img[y0 : y0 + max(1, round(2 * s)), dash] = (225, 220, 200)
    return img


def _mud(rng: np.random.Generator, n: int, _s: float) -> F32:
    t = 0.7 * _smooth(rng, n, 7) + 0.3 * rng.random((n, n)).astype(_F)
    img = _mix((60, 40, 22), (120, 85, 50), t)
    puddle = _smooth(rng, n, 5) > 0.78
    img[puddle] = img[puddle] * 0.6 + np.asarray((90, 90, 95), dtype=_F) * 0.4
    return img


_SCENES: Final[dict[str, Callable[[np.random.Generator, int, float], F32]]] = {
    "grass": _grass, "sand": _sand, "water": _water, "snow": _snow, "sky": _sky, "brick": _brick,
    "wood": _wood, "gravel": _gravel, "carpet": _carpet, "tiles": _tiles, "asphalt": _asphalt, "mud": _mud,
}  # fmt: skip


def build_background_bank(image_size: int, seed: int, variants: int = 6) -> dict[str, F32]:
    """Render every scene texture ``variants`` times at twice the image size, plus mirror images.

    The bank is float32 and holds the left-right mirrored copies too, so that cropping a window is
    a contiguous slice (converting and flipping per image cost ~50 us, a quarter of a scene).

    Args:
        image_size: Output image side; textures are ``2 * image_size`` square, feature sizes
            scale with ``image_size / 64``.
        seed: Seed of the bank (part of the world, not of a split).
        variants: Renders per scene (the bank holds twice as many, with the mirrors).

    Returns:
        Scene name -> ``(2 * variants, 2S, 2S, 3)`` float32 array with values in [0, 255].
    """
    n, s = 2 * image_size, image_size / 64.0
    bank: dict[str, F32] = {}
    for k, (name, fn) in enumerate(_SCENES.items()):
        rng = np.random.default_rng([seed, k])
        renders = np.stack([np.clip(fn(rng, n, s), 0, 255).round() for _ in range(variants)]).astype(_F)
        bank[name] = np.concatenate([renders, np.ascontiguousarray(renders[:, :, ::-1])])
    return bank


# Spots are looked up in a fixed tileable texture of random discs (radius 0.3-0.55 of its
# 8-px period) rather than drawn per object: a per-object disc test cost ~0.4 ms for a leopard.
_SPOT_TILE = 64
_SPOT_PERIOD = 8.0


@cache
def _spots() -> NDArray[np.bool_]:
    rng = np.random.default_rng(11)
    count = int(_SPOT_TILE * _SPOT_TILE / _SPOT_PERIOD**2 * 0.8)
    y, x = np.mgrid[0:_SPOT_TILE, 0:_SPOT_TILE].astype(_F)
    tile = np.zeros((_SPOT_TILE, _SPOT_TILE), dtype=bool)
    for cy, cx, r in zip(
        rng.uniform(0, _SPOT_TILE, count), rng.uniform(0, _SPOT_TILE, count),
        rng.uniform(0.3, 0.55, count) * _SPOT_PERIOD, strict=True,
    ):  # fmt: skip
        dy = np.minimum(np.abs(y - cy), _SPOT_TILE - np.abs(y - cy))  # wrap around: tileable
        dx = np.minimum(np.abs(x - cx), _SPOT_TILE - np.abs(x - cx))
        tile |= dy * dy + dx * dx < r * r
    return tile


@cache
def _speckles() -> NDArray[np.bool_]:
    """A fixed tile of 1-px speckles (25% density), looked up like the spots."""
    return np.random.default_rng(12).random((_SPOT_TILE, _SPOT_TILE)) < 0.25


def pattern_mask(pattern: str, u: F32, v: F32, period: float, phase: tuple[float, float]) -> F32:
    """Where the second colour of a pattern shows, on rotated local coordinates.

    Args:
        pattern: A pattern label.
        u: Coordinate along the object's major axis (pixels), any shape.
        v: Coordinate along the minor axis, same shape.
        period: Repeat length in pixels.
        phase: Offsets along u and v as fractions of a period (the only randomness, so that
            changing one object's pattern leaves the rest of a scene's draws unchanged).

    Returns:
        A float32 array of the same shape, 1 where the pattern colour shows.
    """
    p = period
    u = u + _F(phase[0] * p)
    v = v + _F(phase[1] * p)
    if pattern == "striped":
        out = (u / p) % 1.0 < 0.5
    elif pattern == "checkered":
        cell = max(1.6, 0.6 * p)
        out = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
    elif pattern == "dotted":
        du, dv = u % p - p / 2, v % p - p / 2
        out = du * du + dv * dv < (0.3 * p) ** 2
    elif pattern == "spotted":
        tile = _spots()
        k = _F(_SPOT_PERIOD / p)
        out = tile[(u * k).astype(np.int32) % _SPOT_TILE, (v * k).astype(np.int32) % _SPOT_TILE]
    elif pattern == "speckled":
        tile = _speckles()
        out = tile[u.astype(np.int32) % _SPOT_TILE, v.astype(np.int32) % _SPOT_TILE]
    elif pattern == "zigzag":
        tri = np.abs((v / (1.5 * p)) % 1.0 - 0.5) * 2.0
        out = ((u + 0.8 * p * tri) / p) % 1.0 < 0.5
    elif pattern == "wavy":
        # amplitude 0.6 period over 2 periods: clearly bent, not mistaken for straight stripes
        out = ((u + 0.6 * p * np.sin(np.pi * v / p)) / p) % 1.0 < 0.5
    elif pattern == "plaid":
        q = 1.4 * p
        out = (u % q < 1.1) | (v % q < 1.1)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return out.astype(_F)
