"""How each object of the world looks: colour anchors, patterns, outlines and accents.

Every object is identified by colour and surface pattern first (the tiny CLIP learns those,
docs/benchmark.md), by its size second, and by a small accent third (a flower's centre, a
balloon's string, a gift's ribbon). Several pairs are deliberately confusable (ladybug and
strawberry are both small, red and dotted or speckled; leopard and giraffe are both yellow and spotted; lime, frog,
broccoli and watermelon are all green), so that no label family is solved outright.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from benchworld.world.draws import Draws

__all__ = [
    "COLOURS",
    "OBJECT_STYLES",
    "PATTERN_COVERAGE",
    "ObjectInstance",
    "ObjectStyle",
    "sample_instance",
    "variant",
]

# RGB anchors of the colour labels; instances jitter around them (+-15% brightness, sd 10 per
# channel), which keeps neighbours (orange/yellow/brown, pink/purple) distinct but not trivially.
COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (205, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (240, 210, 45),
    "green": (60, 165, 55),
    "blue": (40, 85, 215),
    "purple": (130, 55, 175),
    "pink": (245, 140, 190),
    "brown": (125, 75, 35),
    "black": (28, 28, 28),
    "white": (240, 240, 236),
    "gray": (135, 135, 135),
}

# Shades that are not colour labels: a darker tone of the body used as pattern colour (a
# watermelon's stripes are "dark green", which annotates only "green").
SHADES: Final[dict[str, tuple[int, int, int]]] = {
    "darkgreen": (25, 90, 35),
    "darkbrown": (70, 40, 20),
}

# Share of the surface the second colour covers per pattern; the second colour is annotated as a
# colour label only where it covers >= 40% (stripes and checks: yes; dots and speckles: no).
PATTERN_COVERAGE: Final[dict[str, float]] = {
    "striped": 0.5,
    "checkered": 0.5,
    "zigzag": 0.5,
    "wavy": 0.5,
    "dotted": 0.2,
    "spotted": 0.3,
    "speckled": 0.25,
    "plaid": 0.3,
}

# Palette of the variable things (balloons, gifts, kites, towels, flowers, flags).
_VARIABLE: Final = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "gray")


# Rotation (radians) of objects that are always upright: the major axis is u = x cos + y sin.
_UPRIGHT: Final[dict[str, float]] = {"balloon": math.pi / 2, "flag": 0.0}


@dataclass(frozen=True)
class ObjectStyle:
    """How instances of one object category are drawn.

    Attributes:
        shape: Outline: ``ellipse``, ``ring``, ``square``, ``rect``, ``diamond``, ``cluster`` or
            ``petals``.
        radius: Range of the half-length in pixels at 64 px (scaled with the image size).
        aspect: Range of the minor/major axis ratio.
        body: Body colour choices (colour label names).
        pattern: Pattern choices; ``None`` stands for plain.
        second: Pattern colour choices (colour names or shades); empty means "a contrasting
            colour from the palette".
        accent: Name of a small structural feature drawn on or next to the body.
        colours: Fixed colour annotation, overriding the coverage rule (``None``: use the rule).
    """

    shape: str
    radius: tuple[float, float]
    aspect: tuple[float, float]
    body: tuple[str, ...]
    pattern: tuple[str | None, ...] = (None,)
    second: tuple[str, ...] = ()
    accent: str | None = None
    colours: tuple[str, ...] | None = None


def _s(
    shape: str, radius: tuple[float, float], aspect: tuple[float, float], body: str | tuple[str, ...], **kw: object
) -> ObjectStyle:
    bodies = (body,) if isinstance(body, str) else body
    return ObjectStyle(shape, radius, aspect, bodies, **kw)  # type: ignore[arg-type]


# Radii: "small" objects (ladybug, bee, blueberry, coin, strawberry) span 6-12 px at 64 px, i.e.
# one or two 8-px patches, so that the local (top-k patch) stream has something to find.
OBJECT_STYLES: Final[dict[str, ObjectStyle]] = {
    "zebra": _s("ellipse", (9, 18), (0.55, 0.75), "white", pattern=("striped",), second=("black",)),
    "tiger": _s("ellipse", (9, 18), (0.55, 0.75), "orange", pattern=("striped",), second=("black",)),
    "giraffe": _s(
        "ellipse", (9, 18), (0.6, 0.8), "yellow", pattern=("spotted",), second=("brown",), colours=("yellow", "brown")
    ),
    "leopard": _s("ellipse", (8, 16), (0.55, 0.75), "yellow", pattern=("spotted",), second=("black",)),
    "ladybug": _s("ellipse", (3, 6), (0.8, 1.0), "red", pattern=("dotted",), second=("black",), accent="head"),
    "bee": _s("ellipse", (3, 6), (0.6, 0.75), "yellow", pattern=("striped",), second=("black",)),
    "panda": _s("ellipse", (8, 14), (0.7, 0.9), "white", accent="panda", colours=("white", "black")),
    "frog": _s("ellipse", (4, 9), (0.7, 0.9), "green", pattern=("spotted",), second=("darkgreen",), accent="eyes"),
    "flamingo": _s("ellipse", (6, 12), (0.5, 0.7), "pink", accent="beak"),
    "crow": _s("ellipse", (5, 10), (0.55, 0.75), "black", accent="beak"),
    "swan": _s("ellipse", (6, 12), (0.55, 0.7), "white", accent="beak"),
    "goldfish": _s("ellipse", (4, 8), (0.45, 0.6), "orange", accent="tail"),
    "snake": _s("ellipse", (8, 15), (0.2, 0.3), "green", pattern=("zigzag",), second=("yellow",)),
    "strawberry": _s("ellipse", (3, 7), (0.8, 0.95), "red", pattern=("speckled",), second=("yellow",), accent="top"),
    "lemon": _s("ellipse", (5, 10), (0.65, 0.8), "yellow"),
    "lime": _s("ellipse", (4, 8), (0.85, 1.0), "green"),
    "tomato": _s("ellipse", (5, 10), (0.85, 1.0), "red", accent="top"),
    "watermelon": _s("ellipse", (8, 16), (0.7, 0.9), "green", pattern=("striped",), second=("darkgreen",)),
    "grape": _s("cluster", (4, 9), (0.8, 1.0), "purple"),
    "blueberry": _s("ellipse", (3, 5), (0.9, 1.0), "blue"),
    "cookie": _s("ellipse", (5, 10), (0.9, 1.0), "brown", pattern=("dotted",), second=("darkbrown",)),
    "egg": _s("ellipse", (4, 8), (0.7, 0.8), "white"),
    "pizza": _s("ellipse", (8, 16), (0.95, 1.0), "yellow", pattern=("spotted",), second=("red",), accent="crust"),
    "broccoli": _s("cluster", (6, 11), (0.8, 1.0), "green", pattern=("speckled",), second=("darkgreen",)),
    "carrot": _s("ellipse", (5, 10), (0.25, 0.35), "orange", accent="top"),
    "coin": _s("ellipse", (3, 6), (0.95, 1.0), ("yellow", "gray"), accent="rim"),
    "chessboard": _s("square", (9, 16), (1.0, 1.0), "black", pattern=("checkered",), second=("white",)),
    "tire": _s("ring", (6, 12), (0.9, 1.0), "black", accent="hub"),
    "balloon": _s(
        "ellipse",
        (5, 10),
        (0.8, 0.9),
        _VARIABLE,
        pattern=(None, "striped", "dotted", "zigzag", "wavy"),
        accent="string",
    ),
    "gift": _s(
        "square",
        (6, 12),
        (0.9, 1.0),
        _VARIABLE,
        pattern=(None, "striped", "dotted", "checkered", "zigzag", "wavy", "plaid"),
        accent="ribbon",
    ),
    "flower": _s(
        "petals", (4, 9), (1.0, 1.0), ("red", "yellow", "pink", "purple", "white", "blue", "orange"), accent="centre"
    ),
    "flag": _s("rect", (7, 13), (0.6, 0.7), _VARIABLE, pattern=("striped", "striped", "checkered"), accent="pole"),
    "kite": _s(
        "diamond",
        (6, 12),
        (0.6, 0.75),
        _VARIABLE,
        pattern=("striped", "checkered", "zigzag", "dotted", "wavy"),
        accent="tail",
    ),
    "towel": _s(
        "rect",
        (8, 16),
        (0.5, 0.7),
        _VARIABLE,
        pattern=("striped", "checkered", "plaid", "wavy", "zigzag", "dotted"),
        accent="fringe",
    ),
}


@dataclass(frozen=True)
class ObjectInstance:
    """One sampled object before placement.

    Attributes:
        name: Object label.
        radius: Half-length of the major axis in pixels.
        aspect: Minor/major axis ratio.
        angle: Rotation in radians.
        body_rgb: Jittered body colour (0-255).
        second_rgb: Jittered pattern colour.
        pattern: Pattern label, or ``None`` for plain.
        period: Pattern period in pixels.
        colours: Colour labels this instance shows.
        body: Name of the body colour.
        second: Name of the pattern colour (a colour label or a shade).
    """

    name: str
    radius: float
    aspect: float
    angle: float
    body_rgb: tuple[float, float, float]
    second_rgb: tuple[float, float, float]
    pattern: str | None
    period: float
    colours: tuple[str, ...]
    body: str = ""
    second: str = ""


def _jitter(rgb: tuple[int, int, int], draws: Draws) -> tuple[float, float, float]:
    scale = draws.uniform(0.85, 1.12)
    r, g, b = (min(255.0, max(0.0, c * scale + draws.normal(10.0))) for c in rgb)
    return (r, g, b)


def _rgb(name: str) -> tuple[int, int, int]:
    return COLOURS[name] if name in COLOURS else SHADES[name]


def _angle(name: str, draws: Draws) -> float:
    # Balloons hang on their string and flags fly from an upright pole (+-0.15 rad); the rest
    # are seen from above at any rotation.
    if name in _UPRIGHT:
        return _UPRIGHT[name] + draws.uniform(-0.15, 0.15)
    return draws.uniform(0.0, math.pi)


def _period(name: str, minor: float, draws: Draws, scale: float) -> float:
    if name == "flag":  # three broad bands across the flag's height (2 * minor), not fine stripes
        return minor * 4.0 / 3.0
    # 3.5-5.5 px at 64 px: a stripe pair or a row of dots fits inside one 8-px patch (3 px
    # periods blurred into flat colour on small objects in the first design).
    return draws.uniform(3.5, 5.5) * scale


def sample_instance(name: str, draws: Draws, scale: float) -> ObjectInstance:
    """Sample the size, pose, colours and pattern of one object.

    Args:
        name: Object label (a key of ``OBJECT_STYLES``).
        draws: Source of randomness.
        scale: Image size / 64 (radii and periods are given at 64 px).

    Returns:
        The instance, with its colour annotation.
    """
    style = OBJECT_STYLES[name]
    body = draws.choice(style.body)
    pattern = draws.choice(style.pattern)
    if style.second:
        second = draws.choice(style.second)
    else:
        # A contrasting partner from the palette (or black), never the body colour itself.
        second = draws.choice([c for c in (*_VARIABLE, "black") if c != body])
    radius = draws.uniform(*style.radius) * scale
    aspect = draws.uniform(*style.aspect)
    return ObjectInstance(
        name=name,
        radius=radius,
        aspect=aspect,
        angle=_angle(name, draws),
        body_rgb=_jitter(_rgb(body), draws),
        second_rgb=_jitter(_rgb(second), draws),
        pattern=pattern,
        period=_period(name, radius * aspect, draws, scale),
        colours=_colour_labels(style, body, pattern, second),
        body=body,
        second=second,
    )


def _colour_labels(style: ObjectStyle, body: str, pattern: str | None, second: str) -> tuple[str, ...]:
    if style.colours is not None:
        return style.colours
    if pattern is not None and PATTERN_COVERAGE[pattern] >= 0.4 and second in COLOURS and second != body:
        return (body, second)
    return (body,)


def variant(inst: ObjectInstance, draws: Draws, attribute: str) -> ObjectInstance | None:
    """The same object with another body colour or pattern, for counterfactual twins.

    Only attributes that vary for the category change (a balloon's colour, a towel's pattern);
    position, size, pose and every other random choice stay, so that a twin image differs from
    its original in that one attribute.

    Args:
        inst: The original instance.
        draws: Source of randomness (which new value).
        attribute: ``"colour"`` or ``"pattern"``.

    Returns:
        The variant, or ``None`` when the category does not vary in that attribute.
    """
    style = OBJECT_STYLES[inst.name]
    body, pattern, second = inst.body, inst.pattern, inst.second
    if attribute == "colour":
        options = [c for c in style.body if c not in (inst.body, inst.second)]
        if not options:
            return None
        body = draws.choice(options)
        # keep the instance's jitter: scale the new anchor by the old colour's brightness ratio
        ratio = sum(inst.body_rgb) / max(1.0, float(sum(_rgb(inst.body))))
        r, g, b = (min(255.0, c * ratio) for c in _rgb(body))
        return replace(inst, body=body, body_rgb=(r, g, b), colours=_colour_labels(style, body, pattern, second))
    options_p = [p for p in style.pattern if p != inst.pattern]
    if not options_p or inst.name == "flag":  # a flag's stripes are its bands
        return None
    pattern = draws.choice(options_p)
    return replace(inst, pattern=pattern, colours=_colour_labels(style, body, pattern, second))
