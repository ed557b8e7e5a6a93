"""Processed pixels per image, so each image is resized and normalised once per model load.

Every LoRA step, sample, description and evaluation hands the processor PIL images: a training
step of the world's recipe spent 0.08 s of its 0.44 s resizing and normalising 32 images it had
seen in every earlier step, and another 0.04 s hashing the resulting pixels to look their
features up in the feature cache. ``PixelMemo`` keeps the image processor's output per image,
keyed by a hash of the image itself (pixels, size and mode of the PIL image: 30 us for a 128-px
image, and an augmented copy is a different image), together with the digest of the processed
pixels, which ``features.CachedTower`` then takes instead of hashing again.

Only image processors that give one fixed-size ``pixel_values`` row per image (the LLaVA family,
the embedded model) are memoised; others (Qwen2-VL's patch grids, Idefics3's image splitting)
are detected on the first call and always run as they are. The memo is an LRU bounded in bytes.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

_MEMOS: weakref.WeakKeyDictionary[Any, PixelMemo] = weakref.WeakKeyDictionary()


def image_digest(im: Image.Image) -> bytes:
    """Identity of a PIL image's content (not its file): SHA-1 of its pixels, size and mode."""
    h = hashlib.sha1(f"{im.mode}:{im.size}".encode(), usedforsecurity=False)
    h.update(im.tobytes())
    return h.digest()


class PixelMemo:
    """LRU of processed ``pixel_values`` rows (and their digests) for one processor."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[bytes, str], tuple[torch.Tensor, bytes]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0
        self.supported: bool | None = None  # decided by the first call

    def process(self, inner: Any, images: Any, **kwargs: Any) -> Any:
        """``inner(images, **kwargs)``, answered from the memo where it can be."""
        flat = _flat_images(images)
        if self.supported is False or flat is None or not flat:
            return inner(images, **kwargs)
        settings = repr(sorted(kwargs.items()))
        keys = [(image_digest(im), settings) for im in flat]
        got = {k: self._get(k) for k in keys if k in self.entries}  # held here: puts below may evict
        missing: dict[tuple[bytes, str], int] = {}
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
                got[k] = self._put(k, row)
            if len(missing) == len(keys):  # nothing reused: hand back the processor's own output
                remember_digests(out["pixel_values"], [got[k][1] for k in keys])
                return out
        from transformers import BatchFeature

        pixels = torch.stack([got[k][0] for k in keys])
        remember_digests(pixels, [got[k][1] for k in keys])
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

    def _put(self, key: tuple[bytes, str], row: torch.Tensor) -> tuple[torch.Tensor, bytes]:
        from selfsynth.models.features import tensor_digest

        entry = (row, tensor_digest(row))
        size = row.numel() * row.element_size()
        if size <= self.max_bytes:
            self.entries[key] = entry
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (old, _) = self.entries.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        return entry

    def _get(self, key: tuple[bytes, str]) -> tuple[torch.Tensor, bytes]:
        self.entries.move_to_end(key)
        return self.entries[key]


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


_DIGESTS: list[tuple[weakref.ref[torch.Tensor], list[bytes]]] = []


def remember_digests(pixels: torch.Tensor, digests: list[bytes]) -> None:
    """Note the per-row digests of a ``pixel_values`` tensor made from the memo.

    Held by a weak reference to that very tensor object: a tensor that is not it (a copy, a
    dtype or device move, a new tensor at a reused address) finds nothing and is hashed.
    """
    _DIGESTS[:] = [(r, d) for r, d in _DIGESTS if r() is not None][-7:]
    _DIGESTS.append((weakref.ref(pixels), digests))


def known_digests(pixels: torch.Tensor) -> list[bytes] | None:
    """The digests noted for exactly this tensor object, if any."""
    for ref, digests in reversed(_DIGESTS):
        if ref() is pixels and len(digests) == pixels.shape[0]:
            return digests
    return None
