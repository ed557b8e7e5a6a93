"""Processed pixels per image, so each image is resized and normalised once per model load.

Every LoRA step, sample, description and evaluation hands the processor PIL images, and on a
small model resizing and normalising the same images every epoch, then hashing the pixels to look
their features up in the feature cache, is a sizeable share of a training step. ``PixelMemo``
keeps the image processor's output per image, keyed by a cheap hash of the image itself (pixels,
size and mode of the PIL image, so an augmented copy is a different image), together with the
digest of the processed pixels, which ``features.CachedTower`` then takes instead of hashing
again (``features.remember_digests``).

Only image processors that give one fixed-size ``pixel_values`` row per image (the LLaVA family,
the embedded model) are memoised; others (Qwen2-VL's patch grids, Idefics3's image splitting)
are detected on the first call and always run as they are. The memo is an LRU bounded in bytes.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from selfsynth.models.features import FeatureCache, Record, remember_digests, tensor_digest

log = logging.getLogger(__name__)

_MEMOS: weakref.WeakKeyDictionary[Any, PixelMemo] = weakref.WeakKeyDictionary()


def image_digest(im: Image.Image) -> bytes:
    """Identity of a PIL image's content (not its file): SHA-1 of its pixels, size and mode."""
    h = hashlib.sha1(f"{im.mode}:{im.size}".encode(), usedforsecurity=False)
    h.update(im.tobytes())
    return h.digest()


class PixelMemo:
    """Processed ``pixel_values`` rows (and their digests) for one processor, LRU-bounded in bytes."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.rows = FeatureCache(max_bytes)  # the feature cache's byte-bounded LRU, in memory only
        self.hits = self.misses = 0
        self.supported: bool | None = None  # decided by the first call

    def process(self, inner: Any, images: Any, **kwargs: Any) -> Any:
        """``inner(images, **kwargs)``, answered from the memo where it can be."""
        flat = _flat_images(images)
        if self.supported is False or flat is None or not flat:
            return inner(images, **kwargs)
        settings = repr(sorted(kwargs.items()))
        keys = [f"{image_digest(im).hex()}:{settings}" for im in flat]
        got: dict[str, Record] = {}  # held here: puts below may evict
        for k in keys:
            rec = got.get(k) or self.rows.get(k)
            if rec is not None:
                got[k] = rec
        missing: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in got and k not in missing:
                missing[k] = i
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            out = inner([[flat[i]] for i in missing.values()], **kwargs)
            rows = self._rows(out, len(missing))
            if rows is None:
                self.supported = False
                log.info("pixel memo: %s output is not one row per image; not memoised", type(inner).__name__)
                return inner(images, **kwargs)
            self.supported = True
            for k, row in zip(missing, rows, strict=True):
                got[k] = {
                    "pixel_values": row,
                    "digest": torch.frombuffer(bytearray(tensor_digest(row)), dtype=torch.uint8),
                }
                self.rows.put(k, got[k])
            if len(missing) == len(keys):  # nothing reused: hand back the processor's own output
                remember_digests(out["pixel_values"], [_digest(got[k]) for k in keys])
                return out
        from transformers import BatchFeature

        pixels = torch.stack([got[k]["pixel_values"] for k in keys])
        remember_digests(pixels, [_digest(got[k]) for k in keys])
        return BatchFeature({"pixel_values": pixels})

    @staticmethod
    def _rows(out: Any, n: int) -> list[torch.Tensor] | None:
        try:
            keys = set(out.keys())
        except AttributeError:
            return None
        pixels = out.get("pixel_values") if keys == {"pixel_values"} else None
        if not torch.is_tensor(pixels) or pixels.ndim != 4 or pixels.shape[0] != n:
            return None
        return [pixels[i].clone() for i in range(n)]


def _digest(rec: Record) -> bytes:
    return rec["digest"].numpy().tobytes()


def _flat_images(images: Any) -> list[Image.Image] | None:
    """PIL images of a flat list or a list of one-image lists; None for any other layout."""
    if not isinstance(images, (list, tuple)):
        return None
    flat = []
    for item in images:
        if isinstance(item, (list, tuple)):
            if len(item) != 1:
                return None
            item = item[0]
        if not isinstance(item, Image.Image):
            return None
        flat.append(item)
    return flat


def attach(processor: Any, max_bytes: int = 1 << 30) -> PixelMemo:
    """Give ``processor`` a pixel memo (``use`` turns it on around a processor call)."""
    memo = _MEMOS.get(processor)
    if memo is None:
        memo = _MEMOS[processor] = PixelMemo(max_bytes)
    return memo


@contextmanager
def use(processor: Any) -> Iterator[None]:
    """Route the processor's image processing through its memo for one call (if it has one).

    The image processor is swapped only for the call, so saving or copying the processor never
    meets the wrapper.
    """
    memo = _MEMOS.get(processor)
    inner = getattr(processor, "image_processor", None)
    if memo is None or inner is None or memo.supported is False:
        yield
        return
    processor.image_processor = _Routed(inner, memo)
    try:
        yield
    finally:
        processor.image_processor = inner


class _Routed:
    """The image processor with its ``__call__`` answered by the memo; everything else delegated."""

    def __init__(self, inner: Any, memo: PixelMemo) -> None:
        self._inner, self._memo = inner, memo

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        return self._memo.process(self._inner, images, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
