"""Draw one image of a species: pick a scene, pose the bird, occlude, light, and measure what shows.

Visibility is measured, not assumed: every shape is also painted into a region map (one id per
part) on a canvas larger than the frame, once before and once after the occluders; a part is
visible when at least half of its pixels (60 % for the beak) are still in the frame and
uncovered. So a leaf that only grazes the tail leaves the tail visible, and a tail pushed out of
the frame by the pose counts as hidden even without a crop event.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from selfsynth.data.world.bird import HIPS, PALETTE, build_bird, jitter, leg_shapes, move
from selfsynth.data.world.geometry import Pose, Shape, bbox_of
from selfsynth.data.world.phrases import PARTS
from selfsynth.data.world.scenery import BACKGROUNDS, background, light, occluder, perch

SUPERSAMPLE = 2
# Scene odds. They set how often each part is hidden, hence the share of test images whose visible
# parts fit more than one species (make.difficulty); tuned so the default world lands at 5-15 %.
P_FLYING = 0.3
P_HEAD_TURNED = 0.07
P_OCCLUDER = 0.25
P_CROP = 0.1
OCCLUDER_TARGETS = {"tail": 0.8, "legs": 1.2, "wing": 0.7, "breast": 0.7}
UNITS = {"small": 0.185, "medium": 0.205, "large": 0.225}  # bird unit (half a body) / frame side
VISIBLE_AT = {"beak": 0.6}
VISIBLE_DEFAULT = 0.5
SIZE_VISIBLE_AT = 0.9  # share of the whole bird inside the frame needed to judge its size

REGIONS = ("body", "head", "crown", "wing", "wingbar", "beak", "face", "tail", "breast", "legs")
_REGION_ID = {r: i + 1 for i, r in enumerate(REGIONS)}
PART_REGION = {
    "crown_colour": "crown",
    "wing_colour": "wing",
    "wing_bars": "wingbar",
    "beak_shape": "beak",
    "beak_colour": "beak",
    "tail_shape": "tail",
    "face": "face",
    "breast_pattern": "breast",
    "leg_colour": "legs",
}


@dataclass
class Drawn:
    """One drawn image and what it shows."""

    image: Image.Image
    visible_parts: list[str]
    scene: dict[str, Any]
    visibility: dict[str, float]  # region -> share of its pixels visible


def sample_scene(rng: random.Random) -> dict[str, Any]:
    pose = "flying" if rng.random() < P_FLYING else "perched"
    scene: dict[str, Any] = {
        "pose": pose,
        "facing": rng.choice(("left", "right")),
        "head_turned": rng.random() < P_HEAD_TURNED,
        "background": rng.choice(BACKGROUNDS),
        "occluder": None,
        "occluded": None,
        "cropped": None,
    }
    if rng.random() < P_OCCLUDER:
        targets = {k: w for k, w in OCCLUDER_TARGETS.items() if not (k == "legs" and pose == "flying")}
        scene["occluded"] = rng.choices(list(targets), list(targets.values()))[0]
        # a branch across the wing or breast would be a tree trunk over the whole bird
        scene["occluder"] = (
            rng.choice(("leaves", "branch")) if scene["occluded"] in ("tail", "legs") else "leaves"
        )
    if rng.random() < P_CROP:
        scene["cropped"] = "bottom" if pose == "perched" and rng.random() < 0.4 else "tail"
    return scene


def _region_box(shapes: list[Shape], region: str) -> tuple[float, float, float, float] | None:
    sel = [s for s in shapes if s.region == region]
    if region == "wing":  # the near wing (last drawn) and its bars, not the far wing behind the body
        sel = sel[-1:] + [s for s in shapes if s.region == "wingbar"]
    return bbox_of(sel) if sel else None


def _place(shapes: list[Shape], s: int, rng: random.Random) -> tuple[float, float]:
    x0, y0, x1, y1 = bbox_of(shapes)
    margin = 0.02 * s

    def pick(lo: float, hi: float) -> float:
        free_lo, free_hi = margin - lo, s - margin - hi
        return rng.uniform(free_lo, free_hi) if free_lo <= free_hi else (free_lo + free_hi) / 2

    return pick(x0, x1), pick(y0, y1)


def _paint(
    draw: ImageDraw.ImageDraw, sh: Shape, fill: Any, outline: Any = None, k: float = 1.0, off: float = 0.0
) -> None:
    pts = [(x * k + off, y * k + off) for x, y in sh.pts]
    if sh.width > 0:
        draw.line(pts, fill=fill, width=max(1, round(sh.width * k)), joint="curve")
    elif len(pts) >= 3:
        width = max(1, round(sh.edge * k)) if outline is not None and sh.edge > 0 else 0
        draw.polygon(pts, fill=fill, outline=outline if width else None, width=width or 1)


def _counts(lab: Image.Image, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    arr = np.asarray(lab if window is None else lab.crop(window))
    return np.bincount(arr.ravel(), minlength=len(REGIONS) + 1)


def draw_image(attrs: dict[str, str], size: int, rng: random.Random) -> Drawn:
    """Draw ``attrs`` (one value per part) as a ``size`` x ``size`` image; the rng decides the rest."""
    scene = sample_scene(rng)
    s = size * SUPERSAMPLE
    u = UNITS[attrs["size"]] * s * rng.uniform(0.95, 1.05)
    flying = scene["pose"] == "flying"
    angle = math.radians(rng.uniform(-10, 8) if flying else rng.uniform(-32, -12))
    tail_angle = math.radians(rng.uniform(172, 186) if flying else rng.uniform(158, 172))
    local = build_bird(attrs, flying=flying, head_turned=scene["head_turned"], wing_angle=rng.uniform(-0.4, 0.15),
                       tail_angle=tail_angle, rng=rng)  # fmt: skip
    pose = Pose(u, angle, flip=scene["facing"] == "left")
    shapes = [pose.shape(sh) for sh in local]
    foot_y = 0.0
    if not flying:
        hips = pose.apply(HIPS)
        foot_y = max(y for _, y in hips) + 0.5 * u
        legs = leg_shapes(
            hips, foot_y, u, scene["facing"] == "right", jitter(PALETTE[attrs["leg_colour"]], rng, 8)
        )
        body_at = next(i for i, sh in enumerate(shapes) if sh.region == "body")
        shapes = shapes[:body_at] + legs + shapes[body_at:]
    dx, dy = _place(shapes, s, rng)
    shapes = move(shapes, dx, dy)
    foot_y += dy
    crop = scene["cropped"]
    if crop == "tail":
        x0, _, x1, _ = _region_box(shapes, "tail") or (0.0, 0.0, 0.0, 0.0)
        shift = 0.2 * (x1 - x0) - x1 if scene["facing"] == "right" else s - 0.2 * (x1 - x0) - x0
        shapes = move(shapes, shift, 0.0)
    elif crop == "bottom":
        shapes = move(shapes, 0.0, s + 0.08 * u - foot_y)
        foot_y = s + 0.08 * u
    scenery_back = perch(foot_y, s, u, rng) if not flying else []
    cover: list[Shape] = []
    if scene["occluded"]:
        box = _region_box(shapes, scene["occluded"])
        if box is not None:
            bx0, by0, bx1, by1 = _region_box(shapes, "body") or box
            cover = occluder(scene["occluder"], box, ((bx0 + bx1) / 2, (by0 + by1) / 2), s, u, rng)

    img = background(scene["background"], s, rng)
    draw = ImageDraw.Draw(img)
    for sh in scenery_back + shapes + cover:
        _paint(draw, sh, sh.fill, sh.outline)
    # Region map at output resolution on a canvas twice the frame, so parts outside the frame count.
    k, off = 1.0 / SUPERSAMPLE, size / 2
    lab = Image.new("L", (2 * size, 2 * size), 0)
    ldraw = ImageDraw.Draw(lab)
    for sh in shapes:
        _paint(ldraw, sh, _REGION_ID[sh.region], None, k, off)
    window = (int(off), int(off), int(off) + size, int(off) + size)
    full, framed = _counts(lab), _counts(lab, window)
    for sh in cover:
        _paint(ldraw, sh, 0, None, k, off)
    seen = _counts(lab, window)

    vis = {r: float(seen[i] / full[i]) if full[i] else 0.0 for r, i in _REGION_ID.items()}
    visible = []
    for part in PARTS:
        if part == "size":
            ok = framed[1:].sum() >= SIZE_VISIBLE_AT * full[1:].sum()
        else:
            region = PART_REGION[part]
            if part == "wing_bars" and attrs["wing_bars"] == "none":
                region = "wing"
            ok = vis[region] >= VISIBLE_AT.get(region, VISIBLE_DEFAULT)
        if ok:
            visible.append(part)
    out = light(img.reduce(SUPERSAMPLE), rng)
    return Drawn(out, visible, scene, {r: round(v, 3) for r, v in vis.items()})
