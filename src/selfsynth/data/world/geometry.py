"""Plane geometry for drawing the world: polygons, ellipses, clipping and the bird-to-canvas transform.

Every shape is a polygon (or a thick line) so one affine transform can pose, flip and scale a
whole bird, and the same shapes can be drawn twice: in colour, and as a region map that says
which pixel belongs to which part (how visibility is measured).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]
RGB = tuple[int, int, int]


@dataclass
class Shape:
    """A filled polygon (``width == 0``) or a thick polyline, tagged with the bird region it paints."""

    region: str  # "" for scenery (occluders, perch): paints over the region map with background
    pts: list[Point]
    fill: RGB
    outline: RGB | None = None
    width: float = 0.0  # polyline width in bird units (canvas px after ``transform``)
    edge: float = 0.0  # outline width, same units

    def bbox(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.pts]
        ys = [p[1] for p in self.pts]
        pad = self.width / 2
        return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 36, rot: float = 0.0) -> list[Point]:
    c, s = math.cos(rot), math.sin(rot)
    out = []
    for i in range(n):
        a = 2 * math.pi * i / n
        x, y = rx * math.cos(a), ry * math.sin(a)
        out.append((cx + x * c - y * s, cy + x * s + y * c))
    return out


def lens(cx: float, cy: float, length: float, width: float, rot: float, n: int = 10) -> list[Point]:
    """A pointed leaf shape centred at (cx, cy)."""
    top, bottom = [], []
    for i in range(n + 1):
        t = i / n
        x = (t - 0.5) * length
        y = math.sin(math.pi * t) * width / 2
        top.append((x, -y))
        bottom.append((x, y))
    pts = top + bottom[::-1][1:-1]
    return rotate(pts, rot, (0.0, 0.0), (cx, cy))


def rotate(
    pts: Sequence[Point], angle: float, about: Point = (0.0, 0.0), to: Point | None = None
) -> list[Point]:
    """Rotate by ``angle`` radians about ``about``, then move ``about`` to ``to`` (default: stay)."""
    c, s = math.cos(angle), math.sin(angle)
    ax, ay = about
    tx, ty = to if to is not None else about
    return [(tx + (x - ax) * c - (y - ay) * s, ty + (x - ax) * s + (y - ay) * c) for x, y in pts]


def scale(pts: Sequence[Point], k: float, about: Point = (0.0, 0.0)) -> list[Point]:
    ax, ay = about
    return [(ax + (x - ax) * k, ay + (y - ay) * k) for x, y in pts]


def shift(pts: Sequence[Point], dx: float, dy: float) -> list[Point]:
    return [(x + dx, y + dy) for x, y in pts]


def band(center: Point, along: Point, half_len: float, half_width: float) -> list[Point]:
    """A rectangle centred at ``center`` whose long side follows the unit vector ``along``."""
    ux, uy = along
    nx, ny = -uy, ux
    cx, cy = center
    return [
        (cx - ux * half_len - nx * half_width, cy - uy * half_len - ny * half_width),
        (cx + ux * half_len - nx * half_width, cy + uy * half_len - ny * half_width),
        (cx + ux * half_len + nx * half_width, cy + uy * half_len + ny * half_width),
        (cx - ux * half_len + nx * half_width, cy - uy * half_len + ny * half_width),
    ]


def unit(dx: float, dy: float) -> Point:
    n = math.hypot(dx, dy) or 1.0
    return dx / n, dy / n


def _signed_area(poly: Sequence[Point]) -> float:
    return sum(poly[i - 1][0] * poly[i][1] - poly[i][0] * poly[i - 1][1] for i in range(len(poly))) / 2


def clip(subject: Sequence[Point], convex: Sequence[Point]) -> list[Point]:
    """``subject`` cut to the inside of the convex polygon ``convex`` (Sutherland-Hodgman)."""
    out = list(subject)
    sign = 1.0 if _signed_area(convex) > 0 else -1.0
    for i in range(len(convex)):
        a, b = convex[i - 1], convex[i]
        if not out:
            break

        def inside(p: Point, a: Point = a, b: Point = b) -> bool:
            return sign * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) >= 0

        def cross(p: Point, q: Point, a: Point = a, b: Point = b) -> Point:
            dx, dy = q[0] - p[0], q[1] - p[1]
            ex, ey = b[0] - a[0], b[1] - a[1]
            den = dx * ey - dy * ex
            t = 0.0 if den == 0 else ((a[0] - p[0]) * ey - (a[1] - p[1]) * ex) / den
            return p[0] + t * dx, p[1] + t * dy

        src, out = out, []
        for j in range(len(src)):
            p, q = src[j - 1], src[j]
            if inside(q):
                if not inside(p):
                    out.append(cross(p, q))
                out.append(q)
            elif inside(p):
                out.append(cross(p, q))
    return out


def inside_ellipse(p: Point, cx: float, cy: float, rx: float, ry: float) -> bool:
    return ((p[0] - cx) / rx) ** 2 + ((p[1] - cy) / ry) ** 2 <= 1.0


@dataclass
class Pose:
    """Bird units -> canvas pixels: scale ``u``, rotate ``angle``, mirror when facing left, move."""

    u: float
    angle: float
    flip: bool
    dx: float = 0.0
    dy: float = 0.0

    def apply(self, pts: Sequence[Point]) -> list[Point]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        out = []
        for x, y in pts:
            xr, yr = (x * c - y * s) * self.u, (x * s + y * c) * self.u
            out.append(((-xr if self.flip else xr) + self.dx, yr + self.dy))
        return out

    def shape(self, sh: Shape) -> Shape:
        return Shape(sh.region, self.apply(sh.pts), sh.fill, sh.outline, sh.width * self.u, sh.edge * self.u)


def bbox_of(shapes: Sequence[Shape]) -> tuple[float, float, float, float]:
    boxes = [s.bbox() for s in shapes if s.pts]
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
