"""The bird's shapes in its own frame (facing right, y down, body centre at the origin, body 2 units long).

Parts are drawn large and in saturated colours so a frozen ImageNet network sees them at 128 px:
the crown is the top half of a big head, wing bars are thick bands, the breast pattern is bold.
The body and the breast ground are neutral and change from image to image, so only the parts
carry the species (an average colour of the bird does not).
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

from selfsynth.data.world.geometry import (
    RGB,
    Point,
    Shape,
    band,
    clip,
    ellipse,
    inside_ellipse,
    rotate,
    scale,
    shift,
    unit,
)

PALETTE: dict[str, RGB] = {
    "red": (215, 30, 35),
    "yellow": (250, 215, 25),
    "blue": (35, 85, 225),
    "black": (22, 22, 26),
    "white": (250, 250, 246),
    "orange": (250, 125, 15),
    "brown": (120, 70, 30),
    "grey": (128, 132, 145),
    "green": (35, 160, 55),
    "pink": (245, 140, 165),
}
BODY_TONES: tuple[RGB, ...] = (
    (165, 145, 118),
    (150, 150, 142),
    (136, 130, 104),
    (186, 168, 134),
    (122, 112, 102),
)
BREAST_TONES: tuple[RGB, ...] = ((246, 238, 218), (238, 238, 236), (236, 220, 188), (224, 224, 212))
MARK: RGB = (62, 40, 24)
OUTLINE: RGB = (34, 28, 24)
EDGE = 0.035  # outline width in bird units

BODY = (0.0, 0.0, 1.0, 0.66)  # cx, cy, rx, ry
HEAD = (1.05, -0.5, 0.56)  # cx, cy, r
EYE = (1.28, -0.48, 0.105)
BEAK_BASE = (1.56, -0.42)
TAIL_BASE = (-0.85, 0.05)
HIPS: tuple[Point, Point] = ((0.32, 0.58), (0.02, 0.63))

_FOLDED_WING = [(0.62, -0.3), (0.3, -0.54), (-0.25, -0.54), (-0.8, -0.32), (-1.5, 0.1), (-0.85, 0.24),
                (-0.2, 0.26), (0.35, 0.14), (0.64, -0.08)]  # fmt: skip
_SPREAD_WING = [(0.45, 0.05), (0.55, -0.45), (0.45, -1.0), (0.15, -1.5), (-0.3, -1.9), (-0.5, -1.95), (-0.55, -1.7),
                (-0.47, -1.55), (-0.66, -1.36), (-0.56, -1.2), (-0.76, -1.0), (-0.63, -0.85), (-0.8, -0.6), (-0.6, -0.4),
                (-0.55, 0.05)]  # fmt: skip
_BREAST_ELLIPSE = (0.5, 0.25, 0.62, 0.45)
# Fixed geometry, computed once: the body, the breast patch inside it, the head, its crown and mask.
_BODY_PTS = ellipse(*BODY)
_BREAST = clip(ellipse(*_BREAST_ELLIPSE), scale(_BODY_PTS, 0.97))
_HEAD_PTS = ellipse(HEAD[0], HEAD[1], HEAD[2], HEAD[2])
_CROWN = clip(_HEAD_PTS, band((HEAD[0], HEAD[1] - 1.0), (1.0, 0.0), 1.0, 0.98))
_MASK = clip(band((1.1, EYE[1]), unit(1.0, 0.05), 0.6, 0.15), _HEAD_PTS)


def jitter(c: RGB, rng: random.Random, amount: int = 10) -> RGB:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)  # type: ignore[return-value]


def shade(c: RGB, k: float) -> RGB:
    return tuple(max(0, min(255, round(v * k))) for v in c)  # type: ignore[return-value]


def _tail(kind: str, angle: float) -> list[Point]:
    shapes = {
        "forked": [(0, -0.2), (1.1, -0.5), (0.55, 0.0), (1.1, 0.5), (0, 0.2)],
        "rounded": [(0, -0.2), (0.55, -0.34)] + [(0.55 + 0.34 * math.cos(a), 0.34 * math.sin(a))
                                                 for a in [(-0.5 + i / 8) * math.pi for i in range(9)]] + [(0.55, 0.34), (0, 0.2)],
        "square": [(0, -0.2), (0.95, -0.33), (0.95, 0.33), (0, 0.2)],
        "pointed": [(0, -0.2), (0.6, -0.17), (1.45, 0.0), (0.6, 0.17), (0, 0.2)],
    }  # fmt: skip
    return rotate([(float(x), float(y)) for x, y in shapes[kind]], angle, (0.0, 0.0), TAIL_BASE)


def _beak(kind: str) -> list[Point]:
    if kind == "curved":
        upper, lower = [], []
        for i in range(9):
            t = i / 8
            cx, cy = 0.95 * t, 0.5 * t * t
            tx, ty = unit(0.95, t)  # tangent of (0.95 t, 0.5 t^2)
            h = 0.12 * (1 - t) + 0.015
            upper.append((cx + ty * h, cy - tx * h))
            lower.append((cx - ty * h, cy + tx * h))
        pts = upper + lower[::-1]
    else:
        pts = {
            "conical": [(-0.05, -0.21), (0.2, -0.15), (0.44, 0.0), (0.2, 0.14), (-0.05, 0.2)],
            "slender": [(-0.05, -0.09), (0.78, 0.0), (-0.05, 0.085)],
            "hooked": [(-0.05, -0.18), (0.3, -0.17), (0.5, -0.07), (0.55, 0.12), (0.46, 0.27), (0.41, 0.08),
                       (0.2, 0.1), (-0.05, 0.14)],
        }[kind]  # fmt: skip
    return rotate(scale(pts, 1.3), math.radians(8), (0.0, 0.0), BEAK_BASE)


@lru_cache(maxsize=8)
def _bar_polys(spread: bool, count: int) -> tuple[tuple[Point, ...], ...]:
    """Wing bars across the unposed wing: bands square to the wing's long axis, cut to the wing."""
    wing, root, tip = (
        (_SPREAD_WING, (0.0, 0.0), (-0.45, -1.9)) if spread else (_FOLDED_WING, (0.5, -0.2), (-1.5, 0.1))
    )
    along = unit(tip[0] - root[0], tip[1] - root[1])
    across = (-along[1], along[0])
    out = []
    for t in (0.4,) if count == 1 else (0.3, 0.52):
        c = (root[0] + (tip[0] - root[0]) * t, root[1] + (tip[1] - root[1]) * t)
        poly = clip(wing, band(c, across, 2.0, 0.08))
        if len(poly) >= 3:
            out.append(tuple(poly))
    return tuple(out)


@lru_cache(maxsize=1)
def _barred() -> tuple[tuple[Point, ...], ...]:
    bars = (clip(_BREAST, band((0.5, -0.1 + 0.14 * i), unit(1.0, 0.15), 1.0, 0.04)) for i in range(7))
    return tuple(tuple(b) for b in bars if len(b) >= 3)


def _breast_marks(kind: str, rng: random.Random) -> list[Shape]:
    if kind == "barred":
        return [Shape("breast", list(b), MARK) for b in _barred()]
    out: list[Shape] = []
    if kind in ("streaked", "spotted"):
        cx, cy, rx, ry = _BREAST_ELLIPSE
        step = 0.17
        for i in range(9):
            for j in range(6):
                x = cx - rx + 0.1 + i * step + (step / 2 if (j % 2 and kind == "spotted") else 0.0)
                y = cy - ry + 0.12 + j * 0.17
                x += rng.uniform(-0.02, 0.02)
                if not inside_ellipse((x, y), cx, cy, rx * 0.85, ry * 0.8) or not inside_ellipse(
                    (x, y), *BODY
                ):
                    continue
                if kind == "spotted":
                    out.append(Shape("breast", ellipse(x, y, 0.06, 0.06, n=10), MARK))
                else:
                    out.append(Shape("breast", band((x, y), unit(0.15, 1.0), 0.09, 0.035), MARK))
    return out


def build_bird(attrs: dict[str, str], *, flying: bool, head_turned: bool, wing_angle: float, tail_angle: float,
               rng: random.Random) -> list[Shape]:  # fmt: skip
    """The bird's shapes in drawing order (legs are added on the canvas, see ``draw.py``)."""
    body_c = jitter(rng.choice(BODY_TONES), rng, 12)
    breast_c = jitter(rng.choice(BREAST_TONES), rng, 6)
    wing_c = jitter(PALETTE[attrs["wing_colour"]], rng, 8)
    shapes: list[Shape] = []
    wing_root = (0.0, -0.35)
    spread = rotate(_SPREAD_WING, wing_angle, (0.0, 0.0), wing_root)
    if flying:  # the far wing shows behind the body, darker
        far = rotate(scale(_SPREAD_WING, 0.75), wing_angle + 0.45, (0.0, 0.0), (0.35, -0.35))
        shapes.append(Shape("wing", far, shade(wing_c, 0.7), OUTLINE, edge=EDGE))
    shapes.append(
        Shape("tail", _tail(attrs["tail_shape"], tail_angle), shade(body_c, 0.7), OUTLINE, edge=EDGE)
    )
    shapes.append(Shape("body", _BODY_PTS, body_c, OUTLINE, edge=EDGE))
    shapes.append(Shape("breast", _BREAST, breast_c))
    shapes += _breast_marks(attrs["breast_pattern"], rng)
    bars = attrs["wing_bars"]
    bar_c = PALETTE[bars.split()[-1]] if bars != "none" else (0, 0, 0)
    n_bars = 0 if bars == "none" else 1 if bars.startswith("one") else 2
    wing = spread if flying else _FOLDED_WING
    shapes.append(Shape("wing", wing, wing_c, OUTLINE, edge=EDGE))
    if n_bars:
        colour = jitter(bar_c, rng, 4)
        for poly in _bar_polys(flying, n_bars):
            pts = rotate(poly, wing_angle, (0.0, 0.0), wing_root) if flying else list(poly)
            shapes.append(Shape("wingbar", pts, colour, OUTLINE, edge=EDGE * 0.8))
    shapes.append(Shape("head", _HEAD_PTS, body_c, OUTLINE, edge=EDGE))
    shapes.append(Shape("crown", _CROWN, jitter(PALETTE[attrs["crown_colour"]], rng, 8), OUTLINE, edge=EDGE))
    if head_turned:  # seen from behind: no eye, face marks or beak
        return shapes
    ex, ey, er = EYE
    face = attrs["face"]
    if face == "black mask":
        shapes.append(Shape("face", _MASK, PALETTE["black"]))
    elif face != "plain":
        shapes.append(
            Shape(
                "face",
                ellipse(ex, ey, er * 2.2, er * 2.2, n=20),
                PALETTE[face.split()[0]],
                OUTLINE,
                edge=EDGE * 0.6,
            )
        )
    shapes.append(Shape("face", ellipse(ex, ey, er, er, n=16), (12, 12, 12)))
    shapes.append(Shape("face", ellipse(ex + 0.03, ey - 0.03, 0.03, 0.03, n=8), (240, 240, 240)))
    beak_c = jitter(PALETTE[attrs["beak_colour"]], rng, 8)
    shapes.append(Shape("beak", _beak(attrs["beak_shape"]), beak_c, OUTLINE, edge=EDGE * 0.8))
    return shapes


def leg_shapes(hips: list[Point], foot_y: float, u: float, facing_right: bool, colour: RGB) -> list[Shape]:
    """Legs straight down from the hips (canvas pixels) to the perch at ``foot_y``, with toes."""
    out = []
    d = 1.0 if facing_right else -1.0
    w = 0.11 * u
    for hx, hy in hips:
        out.append(Shape("legs", [(hx, hy), (hx, foot_y)], colour, width=w))
        for dx, dy in ((0.26, 0.03), (-0.18, 0.04), (0.16, 0.1)):
            out.append(
                Shape("legs", [(hx, foot_y), (hx + d * dx * u, foot_y + dy * u)], colour, width=w * 0.75)
            )
    return out


def move(shapes: list[Shape], dx: float, dy: float) -> list[Shape]:
    return [Shape(s.region, shift(s.pts, dx, dy), s.fill, s.outline, s.width, s.edge) for s in shapes]
