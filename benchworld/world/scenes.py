"""The scene generator: 1 to 5 objects on one or two backgrounds, deterministic from a seed.

An image is a pure function of ``(seed, stream, index)``: each image draws from its own
``numpy`` generator seeded with that triple, so splits can be generated in any order, in
parallel, or one image at a time, and always come out byte-identical.

Layout rules (the numbers are the defaults of :class:`SceneConfig`):

- object count 1-5 with weights 15/25/25/20/15%; 15% of objects repeat the previous category
  (captions then say "two lemons");
- larger objects are drawn first; a placement that would hide more than half of an earlier
  object, or shows fewer than 6 of its own pixels, is retried (4 tries) and then dropped, so every
  annotated object is at least half visible;
- 35% of images split at a horizon into two backgrounds (sky over sea, a brick wall over a wooden
  floor), both annotated.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
from numpy.typing import NDArray

from benchworld.world.appearance import OBJECT_STYLES, ObjectInstance, sample_instance
from benchworld.world.draws import Draws
from benchworld.world.render import render_object
from benchworld.world.structure import home_matrix, partner_matrix
from benchworld.world.textures import SCENE_NAMES, build_background_bank

__all__ = ["Edit", "PlacedObject", "Scene", "SceneConfig", "SceneGenerator"]

Edit = Callable[[list[ObjectInstance]], list[ObjectInstance]]

_F = np.float32
_OBJECT_NAMES: Final = tuple(OBJECT_STYLES)
# Background pairs that make sense above/below a horizon.
_OUTDOOR_TOP: Final = ("sky", "water", "grass", "snow")
_OUTDOOR_BOTTOM: Final = ("grass", "sand", "water", "snow", "gravel", "asphalt", "mud")
_INDOOR_TOP: Final = ("brick", "tiles")
_INDOOR_BOTTOM: Final = ("wood", "carpet", "tiles")


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are composed.

    Attributes:
        image_size: Square image side in pixels (64-96; radii scale with size / 64).
        count_weights: Relative frequency of 1, 2, ... objects per image.
        repeat_p: Chance that an object repeats the previous category.
        split_p: Chance of two backgrounds split at a horizon.
        min_visible: Least visible share of every annotated object.
        bank_seed: Seed of the background texture bank (a property of the world).
        bank_variants: Texture renders per background.
        noise_sd: Per-pixel Gaussian noise, in 0-255 units.
        object_weights: Relative frequency of each object (``OBJECT_STYLES`` order); empty draws
            them uniformly, as world v1 does (the long tail of v2: ``benchworld.world.structure``).
        scene_weights: Relative frequency of each background (``SCENE_NAMES`` order); empty is
            uniform (v1).
        context: Weight multiplier of an object whose home background is in the image, applied
            again when a partner object is already in it (``structure.HOMES``/``PARTNERS``); 1 is
            none (v1).
    """

    image_size: int = 64
    count_weights: tuple[float, ...] = (0.15, 0.25, 0.25, 0.2, 0.15)
    repeat_p: float = 0.15
    split_p: float = 0.35
    min_visible: float = 0.5
    bank_seed: int = 7
    bank_variants: int = 6
    noise_sd: float = 3.0
    object_weights: tuple[float, ...] = ()
    scene_weights: tuple[float, ...] = ()
    context: float = 1.0


@dataclass(frozen=True)
class PlacedObject:
    """An object as it ended up in an image.

    Attributes:
        name: Object label.
        colours: Its colour labels.
        pattern: Its pattern label, or ``None`` when plain.
        radius: Half-length of its major axis in pixels.
        pixels: Pixels it covers in the final image (after occlusion).
        centre: ``(y, x)`` of its centre in pixels.
    """

    name: str
    colours: tuple[str, ...]
    pattern: str | None
    radius: float
    pixels: int
    centre: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    """One generated image and its ground truth.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB.
        objects: The visible objects, in drawing order.
        backgrounds: The scene labels (one, or two when split at a horizon).
    """

    image: NDArray[np.uint8]
    objects: tuple[PlacedObject, ...]
    backgrounds: tuple[str, ...]

    @property
    def labels(self) -> frozenset[str]:
        """Every label of the image: objects, their colours and patterns, and backgrounds."""
        out = set(self.backgrounds)
        for obj in self.objects:
            out.add(obj.name)
            out.update(obj.colours)
            if obj.pattern is not None:
                out.add(obj.pattern)
        return frozenset(out)


class SceneGenerator:
    """Renders scenes; holds the background bank (built lazily on first use, ~0.2 s at 64 px).

    Args:
        config: Composition settings.
    """

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        self._scale = self.config.image_size / 64.0
        total = sum(self.config.count_weights)
        self._count_cdf = list(itertools.accumulate(w / total for w in self.config.count_weights))[:-1]

    @cached_property
    def _bank(self) -> dict[str, NDArray[np.float32]]:
        return build_background_bank(self.config.image_size, self.config.bank_seed, self.config.bank_variants)

    @cached_property
    def _noise(self) -> NDArray[np.float32]:
        size = self.config.image_size
        rng = np.random.default_rng([self.config.bank_seed, 1])
        return rng.standard_normal((2 * size, 2 * size, 3), dtype=_F) * _F(self.config.noise_sd)

    def scene(self, seed: int, stream: int, index: int) -> Scene:
        """The scene at ``index`` of ``stream`` under ``seed`` (a pure function of the triple)."""
        return self.render(Draws(np.random.default_rng([seed, stream, index])))

    def render(self, draws: Draws, edit: Edit | None = None) -> Scene:
        """Render one scene from a source of randomness.

        Args:
            draws: Source of randomness.
            edit: Applied to the sampled objects before they are placed (a twin changes one
                object's colour or pattern); placement and all other draws are unaffected.
        """
        size = self.config.image_size
        canvas, backgrounds = self._background(draws)
        instances = self._sample_objects(draws, backgrounds)
        if edit is not None:
            instances = edit(instances)
        owner = np.full((size, size), -1, dtype=np.int16)
        full: list[int] = []
        visible = np.zeros(len(instances), dtype=np.int64)
        kept: list[tuple[ObjectInstance, tuple[float, float]]] = []
        for inst in instances:
            for _ in range(4):
                centre = self._position(inst, draws)
                if self._try_draw(canvas, owner, full, visible, inst, centre, draws):
                    kept.append((inst, centre))
                    break
        canvas *= _F(draws.uniform(0.88, 1.1))
        if self.config.noise_sd > 0:
            # A random window of a pre-drawn noise field: 30x cheaper than fresh Gaussian draws.
            oy, ox = draws.integer(size), draws.integer(size)
            canvas += self._noise[oy : oy + size, ox : ox + size]
        image = np.clip(canvas, 0, 255).astype(np.uint8)
        pixels = visible[: len(kept)]
        objects = tuple(
            PlacedObject(inst.name, inst.colours, inst.pattern, inst.radius, int(n), centre)
            for (inst, centre), n in zip(kept, pixels, strict=True)
        )
        return Scene(image=image, objects=objects, backgrounds=backgrounds)

    # -- backgrounds -------------------------------------------------------------------------

    def _crop(self, name: str, draws: Draws) -> NDArray[np.float32]:
        size = self.config.image_size
        textures = self._bank[name]
        k = draws.integer(len(textures))
        oy, ox = draws.integer(size + 1), draws.integer(size + 1)
        # The bank holds mirrored copies: a random variant is also a random left-right flip.
        return textures[k, oy : oy + size, ox : ox + size] * _F(draws.uniform(0.85, 1.12))

    def _background(self, draws: Draws) -> tuple[NDArray[np.float32], tuple[str, ...]]:
        size = self.config.image_size
        if draws.random() >= self.config.split_p:
            name = self._pick_scene(SCENE_NAMES, draws)
            return self._crop(name, draws), (name,)
        indoor = draws.random() < 0.3
        tops, bottoms = (_INDOOR_TOP, _INDOOR_BOTTOM) if indoor else (_OUTDOOR_TOP, _OUTDOOR_BOTTOM)
        top = self._pick_scene(tops, draws)
        bottom = self._pick_scene([b for b in bottoms if b != top], draws)
        x = np.arange(size, dtype=_F)
        # Outdoor horizons undulate (up to 2.5 px at 64 px); walls meet floors in a straight line.
        amplitude = 0.0 if indoor else draws.uniform(0, 2.5 * self._scale)
        horizon = size * draws.uniform(0.3, 0.6) + amplitude * np.sin(
            x * draws.uniform(0.05, 0.2) + draws.uniform(0, 6)
        )
        below = np.arange(size, dtype=_F)[:, None] >= horizon[None, :]
        canvas = np.where(below[..., None], self._crop(bottom, draws), self._crop(top, draws))
        return canvas, (top, bottom)

    def _pick_scene(self, options: Sequence[str], draws: Draws) -> str:
        if not self.config.scene_weights:
            return draws.choice(options)  # v1: uniform, the same draws as before v2 existed
        weights = np.array([self._scene_weight[o] for o in options])
        return options[_weighted(weights, draws)]

    @cached_property
    def _scene_weight(self) -> dict[str, float]:
        return dict(zip(SCENE_NAMES, self.config.scene_weights, strict=True))

    # -- objects -----------------------------------------------------------------------------

    @cached_property
    def _object_weights(self) -> NDArray[np.float64]:
        weights = self.config.object_weights or (1.0,) * len(_OBJECT_NAMES)
        if len(weights) != len(_OBJECT_NAMES):
            raise ValueError(f"object_weights has {len(weights)} entries for {len(_OBJECT_NAMES)} objects")
        return np.asarray(weights, dtype=np.float64)

    @cached_property
    def _context(self) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        return home_matrix(_OBJECT_NAMES, SCENE_NAMES), partner_matrix(_OBJECT_NAMES)

    def _pick_object(self, backgrounds: tuple[str, ...], names: list[str], draws: Draws) -> str:
        if not self.config.object_weights and self.config.context == 1.0:
            return draws.choice(_OBJECT_NAMES)  # v1: uniform, the same draws as before v2 existed
        weights = self._object_weights
        if self.config.context != 1.0:
            homes, partners = self._context
            at_home = homes[:, [SCENE_NAMES.index(b) for b in backgrounds]].any(axis=1)
            present = [_OBJECT_NAMES.index(n) for n in names]
            with_partner = partners[:, present].any(axis=1) if present else np.zeros(len(weights), dtype=bool)
            weights = weights * np.where(at_home, self.config.context, 1.0)
            weights = weights * np.where(with_partner, self.config.context, 1.0)
        return _OBJECT_NAMES[_weighted(weights, draws)]

    def _sample_objects(self, draws: Draws, backgrounds: tuple[str, ...]) -> list[ObjectInstance]:
        count = bisect.bisect_right(self._count_cdf, draws.random()) + 1
        names: list[str] = []
        for _ in range(count):
            if names and draws.random() < self.config.repeat_p:
                names.append(names[-1])
            else:
                names.append(self._pick_object(backgrounds, names, draws))
        instances = [sample_instance(n, draws, self._scale) for n in names]
        # Large first: small objects stay on top, where the local stream can find them.
        return sorted(instances, key=lambda inst: -inst.radius)

    def _position(self, inst: ObjectInstance, draws: Draws) -> tuple[float, float]:
        # Centres may sit 0.3 radius from the border: up to ~40% of an object can be cut off,
        # as in photographs.
        lo, hi = 0.3 * inst.radius, self.config.image_size - 0.3 * inst.radius
        return draws.uniform(lo, hi), draws.uniform(lo, hi)

    def _try_draw(
        self,
        canvas: NDArray[np.float32],
        owner: NDArray[np.int16],
        full: list[int],
        visible: NDArray[np.int64],
        inst: ObjectInstance,
        centre: tuple[float, float],
        draws: Draws,
    ) -> bool:
        sprite = render_object(inst, centre, self.config.image_size, draws)
        ys, xs = sprite.window
        solid = sprite.alpha > 0.5
        n_own = int(solid.sum())
        if n_own < 6:
            return False
        j = len(full)
        if j:
            covered = owner[ys, xs][solid]
            lost = np.bincount(covered[covered >= 0], minlength=j)
            if np.any(visible[:j] - lost < self.config.min_visible * np.asarray(full)):
                return False
            visible[:j] -= lost
        sprite.paint(canvas)
        owner_view = owner[ys, xs]
        owner_view[solid] = j
        full.append(n_own)
        visible[j] = n_own
        return True


def _weighted(weights: NDArray[np.float64], draws: Draws) -> int:
    """Index drawn with probability proportional to ``weights`` (one uniform)."""
    cdf = np.cumsum(weights)
    return min(int(np.searchsorted(cdf, draws.random() * cdf[-1], side="right")), len(weights) - 1)
