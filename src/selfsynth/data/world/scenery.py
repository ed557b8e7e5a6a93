"""Backgrounds (sky, water, foliage, sand), the perch, occluders (leaves, a branch) and lighting.

None of it depends on the species: backgrounds and lighting are drawn independently of the bird,
so they carry no information about the label.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from selfsynth.data.world.geometry import RGB, Point, Shape, band, ellipse, lens, unit

BACKGROUNDS = ("sky", "water", "foliage", "sand")
_GREENS: tuple[RGB, ...] = ((46, 120, 40), (70, 150, 52), (30, 96, 36), (96, 160, 60), (58, 132, 74))
_BARKS: tuple[RGB, ...] = ((98, 66, 40), (84, 58, 38), (112, 82, 52), (76, 60, 48))


def _gradient(s: int, top: RGB, bottom: RGB, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """A vertical colour ramp as one ``(s, 1, 3)`` column; widened to the square at the end."""
    t = np.clip((np.linspace(0.0, 1.0, s) - start) / max(end - start, 1e-6), 0.0, 1.0)[:, None, None]
    return np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t


def _rand_rgb(rng: random.Random, lo: RGB, hi: RGB) -> RGB:
    return tuple(rng.randint(a, b) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def background(kind: str, s: int, rng: random.Random) -> Image.Image:
    """An ``s`` x ``s`` RGB background of the given kind."""
    nrng = np.random.default_rng(rng.getrandbits(32))
    if kind == "sky":
        arr = _gradient(
            s,
            _rand_rgb(rng, (60, 130, 215), (115, 180, 250)),
            _rand_rgb(rng, (175, 205, 235), (215, 235, 255)),
        )
    elif kind == "water":
        h = rng.uniform(0.12, 0.3)
        arr = _gradient(
            s,
            _rand_rgb(rng, (40, 105, 140), (80, 150, 190)),
            _rand_rgb(rng, (15, 60, 95), (45, 100, 135)),
            h,
            1.0,
        )
        arr[: int(h * s)] = _gradient(s, (150, 190, 225), (200, 220, 235), 0.0, h)[: int(h * s)]
    elif kind == "foliage":
        arr = _gradient(
            s, _rand_rgb(rng, (30, 70, 26), (60, 110, 50)), _rand_rgb(rng, (20, 55, 20), (50, 95, 40))
        )
    else:
        arr = _gradient(
            s,
            _rand_rgb(rng, (205, 182, 130), (235, 210, 165)),
            _rand_rgb(rng, (185, 160, 110), (215, 190, 145)),
        )
        arr = arr + nrng.normal(0.0, 9.0, (s, s, 1)).astype(np.float32)  # grain: the full square
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if img.width == 1:
        img = img.resize((s, s), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    if kind == "sky":
        for _ in range(rng.randint(1, 3)):
            cx, cy, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.06, 0.14) * s
            tone = rng.randint(232, 252)
            for _ in range(rng.randint(3, 5)):
                ox, oy = rng.uniform(-1.5, 1.5) * r, rng.uniform(-0.4, 0.4) * r
                draw.polygon(
                    ellipse(cx + ox, cy + oy, r * rng.uniform(0.8, 1.4), r * rng.uniform(0.5, 0.8)),
                    fill=(tone, tone, tone),
                )
    elif kind == "water":
        hz = int(h * s)
        draw.rectangle(
            (0, hz - 1, s, hz + rng.randint(2, 6) * s // 128),
            fill=_rand_rgb(rng, (40, 70, 40), (80, 110, 70)),
        )
        for _ in range(30):
            x, y, w = rng.uniform(0, s), rng.uniform(h + 0.03, 1.0) * s, rng.uniform(0.04, 0.18) * s
            tone = rng.randint(110, 190)
            draw.line([(x, y), (x + w, y)], fill=(tone - 40, tone, tone + 30), width=max(1, s // 128))
    elif kind == "foliage":
        for _ in range(70):
            cx, cy = rng.uniform(-0.05, 1.05) * s, rng.uniform(-0.05, 1.05) * s
            length = rng.uniform(0.08, 0.2) * s
            c = rng.choice(_GREENS)
            draw.polygon(
                lens(cx, cy, length, length * 0.45, rng.uniform(0, math.pi)),
                fill=tuple(int(v * rng.uniform(0.6, 1.05)) for v in c),
            )
    else:
        for _ in range(rng.randint(4, 9)):
            cx, cy, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.01, 0.03) * s
            tone = rng.randint(120, 175)
            draw.polygon(ellipse(cx, cy, r * 1.3, r), fill=(tone, tone - 10, tone - 25))
    return img


def perch(foot_y: float, s: int, u: float, rng: random.Random) -> list[Shape]:
    """A branch across the frame just under the feet."""
    tilt = rng.uniform(-0.08, 0.08)
    thick = 0.12 * u
    c = rng.choice(_BARKS)
    poly = band((s / 2, foot_y + thick * 0.8), unit(1.0, tilt), s, thick)
    return [Shape("", poly, c, (50, 36, 24), edge=0.02 * u)]


def occluder(
    kind: str, box: tuple[float, float, float, float], centre: Point, s: int, u: float, rng: random.Random
) -> list[Shape]:
    """Leaves or a branch over the canvas box ``box`` (x0, y0, x1, y1), meant to hide what is inside.

    A branch runs across the line from the bird's ``centre`` to the box, so it covers the part
    and not the rest of the bird.
    """
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    out: list[Shape] = []
    if kind == "branch":
        nx, ny = unit(cx - centre[0], cy - centre[1])
        nx, ny = unit(nx + rng.uniform(-0.2, 0.2), ny + rng.uniform(-0.2, 0.2))
        along = (-ny, nx)
        # half thickness: the box's extent across the branch, plus a margin
        half = 0.5 * (abs(w * nx) + abs(h * ny)) * 1.1 + 0.03 * u
        c = rng.choice(_BARKS)
        dark: RGB = (c[0] * 7 // 10, c[1] * 7 // 10, c[2] * 7 // 10)
        out.append(Shape("", band((cx, cy), along, 1.5 * s, half), c, (50, 36, 24), edge=0.03 * u))
        for k in (-0.45, 0.1, 0.5):  # bark lines
            off = (-along[1] * half * k, along[0] * half * k)
            out.append(Shape("", band((cx + off[0], cy + off[1]), along, 1.5 * s, 0.012 * u + 0.5), dark))
        return out
    # a twig from the nearest frame edge, with a few leaves along it
    edges = [(cy, (cx, 0.0)), (s - cx, (float(s), cy)), (s - cy, (cx, float(s))), (cx, (0.0, cy))]
    ex, ey = min(edges, key=lambda e: e[0] if e[0] > 0 else 1e9)[1]
    out.append(Shape("", [(cx, cy), (ex, ey)], (70, 90, 40), width=0.07 * u))
    for t in (0.45, 0.7):
        px, py = cx + (ex - cx) * t, cy + (ey - cy) * t
        out.append(
            Shape(
                "",
                lens(px, py, 0.5 * u, 0.22 * u, rng.uniform(0, math.pi)),
                rng.choice(_GREENS),
                (20, 60, 20),
                edge=0.02 * u,
            )
        )
    blob = ellipse(cx, cy, w * 0.62 + 0.08 * u, h * 0.62 + 0.08 * u, n=14)
    blob = [(x + rng.uniform(-0.05, 0.05) * u, y + rng.uniform(-0.05, 0.05) * u) for x, y in blob]
    out.append(Shape("", blob, (28, 78, 30)))
    size = max(0.55 * max(w, h), 0.45 * u)
    for _ in range(rng.randint(6, 9)):
        a, r = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.8)
        lx, ly = cx + math.cos(a) * r * w * 0.55, cy + math.sin(a) * r * h * 0.55
        leaf = lens(lx, ly, size * rng.uniform(0.8, 1.2), size * 0.5, rng.uniform(0, math.pi))
        c = rng.choice(_GREENS)
        out.append(Shape("", leaf, c, (20, 60, 20), edge=0.02 * u))
    return out


def light(img: Image.Image, rng: random.Random) -> Image.Image:
    """Random overall brightness, colour cast and a soft light gradient across the frame."""
    arr = np.asarray(img, dtype=np.float32)
    s = arr.shape[0]
    gain = rng.uniform(0.78, 1.18)
    tint = np.asarray([rng.uniform(0.92, 1.08) for _ in range(3)], np.float32)
    a = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.3)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    ramp = 1.0 + strength * ((xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a))
    out = arr * (gain * tint)[None, None, :] * ramp[:, :, None]
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
