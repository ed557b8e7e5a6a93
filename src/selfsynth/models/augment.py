"""Light, seeded image augmentation for SFT: horizontal flip, small random resized crop, brightness.

Kept mild on purpose: the answers name visual evidence (a red crown, wing bars), so the crop
keeps at least 80 % of the area and colours are only brightened or darkened a little. Each call
takes its own ``numpy`` generator, so an example's augmentation depends only on (seed, position
in the data stream), not on the process count or batch layout.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance


def augment(
    image: Image.Image, rng: np.random.Generator, *, min_area: float = 0.8, brightness: float = 0.15
) -> Image.Image:
    """A randomly flipped, cropped (resized back to the input size) and brightness-jittered copy."""
    w, h = image.size
    out = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image
    area = rng.uniform(min_area, 1.0)
    ratio = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    cw = min(w, max(1, round(math.sqrt(area * w * h * ratio))))
    ch = min(h, max(1, round(math.sqrt(area * w * h / ratio))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    out = out.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    return ImageEnhance.Brightness(out).enhance(float(rng.uniform(1 - brightness, 1 + brightness)))
