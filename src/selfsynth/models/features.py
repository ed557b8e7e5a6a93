"""Cache the frozen vision tower's outputs per image, so each image is encoded once per run.

The tower never trains, so its output for an image is a pure function of (tower weights,
feature settings, pixels). Describing an image 30 times, synthesizing 8 answers, training
several epochs and sampling again would otherwise re-encode it every time; for LLaVA-1.5 the
CLIP-L tower is a large share of a short-answer forward pass.

How: the tower module's ``forward`` is wrapped on the instance. Per image in the batch, a key
``blake2b(tower identity, call settings, pixel bytes)`` is looked up in an in-memory LRU, then in
an optional on-disk store (one safetensors file per image, shared across rounds and processes);
only the misses run through the real tower, and the outputs are reassembled in order. Hits
return the stored tensors bit for bit, so cached and uncached runs agree exactly. The tower
identity hashes the tower's config and weights (not the model path), so a merged checkpoint of
the next round reuses the features and a different tower never does. Augmented training images
have new pixels and simply miss (``cache.no_store()`` keeps them out of the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

Record = dict[str, Any]  # field -> tensor | tuple[tensor | None, ...] | None (one image, on CPU)
_TOWER_NAMES = ("vision_tower", "vision_model", "visual")
# Call arguments that never change the tower's output (they only steer the caller's bookkeeping).
_IRRELEVANT = frozenset(
    {"use_cache", "return_dict", "logits_to_keep", "cache", "past_key_values", "cache_position"}
)


def tensor_digest(t: torch.Tensor) -> bytes:
    """SHA-1 of a tensor's bytes (any dtype, any device), 16 bytes of it.

    Every training step hashes its batch's pixels: SHA-1 runs on the CPU's SHA instructions,
    faster than blake2b where they exist, and reading the tensor's buffer directly saves a
    copy. Keys only need to tell images apart, not resist an attacker.
    """
    t = t.detach().contiguous().cpu()
    return hashlib.sha1(memoryview(t.view(torch.uint8).numpy()), usedforsecurity=False).digest()[:16]


_DIGESTS: list[tuple[weakref.ref[torch.Tensor], list[bytes]]] = []


def remember_digests(pixels: torch.Tensor, digests: list[bytes]) -> None:
    """Note the per-row ``tensor_digest`` of a ``pixel_values`` tensor (the pixel memo's batches).

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


def tower_fingerprint(tower: nn.Module, extra: dict[str, Any] | None = None, skip: str = "") -> str:
    """Identity of a tower: class, config, weights (strided sample + sum per tensor) and ``extra``.

    Parameters whose name starts with ``skip`` (a trainable part inside the tower module, like
    Qwen2-VL's merger) are left out.
    """
    h = hashlib.sha256()
    h.update(type(tower).__name__.encode())
    cfg = getattr(tower, "config", None)
    if cfg is not None and hasattr(cfg, "to_json_string"):
        h.update(cfg.to_json_string(use_diff=False).encode())
    h.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in sorted(tower.state_dict().items()):
            if skip and name.startswith(skip):
                continue
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(tensor_digest(flat[::step][:4096]))
            h.update(repr(float(flat.double().sum())).encode())
    return h.hexdigest()[:32]


def _tensors(rec: Record) -> Iterator[tuple[str, torch.Tensor]]:
    """(slot name, tensor) for every tensor of a record; a tensor shared by two slots appears twice."""
    for field, v in rec.items():
        if isinstance(v, tuple):
            yield from ((f"{field}.{i}", t) for i, t in enumerate(v) if t is not None)
        elif v is not None:
            yield field, v


def _nbytes(rec: Record) -> int:
    unique = {id(t): t for _, t in _tensors(rec)}
    return sum(t.numel() * t.element_size() for t in unique.values())


class FeatureCache:
    """In-memory LRU (bounded in bytes) of per-image tower outputs, backed by an optional disk store."""

    def __init__(self, max_bytes: int = 1 << 30, disk_dir: str | Path | None = None) -> None:
        self.max_bytes = max_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._mem: OrderedDict[str, Record] = OrderedDict()
        self._bytes = 0
        self.store = True
        self.hits = self.misses = self.disk_hits = 0

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "disk_hits": self.disk_hits,
            "entries": len(self._mem),
            "bytes": self._bytes,
        }

    def clear(self) -> None:
        self._mem.clear()
        self._bytes = 0

    @contextlib.contextmanager
    def no_store(self) -> Iterator[None]:
        """Look up but do not store (augmented images would only evict useful entries)."""
        old, self.store = self.store, False
        try:
            yield
        finally:
            self.store = old

    def get(self, key: str) -> Record | None:
        rec = self._mem.get(key)
        if rec is not None:
            self._mem.move_to_end(key)
            return rec
        if self.disk_dir is not None:
            rec = self._load(key)
            if rec is not None:
                self.disk_hits += 1
                self._remember(key, rec)
        return rec

    def put(self, key: str, rec: Record) -> None:
        if not self.store:
            return
        self._remember(key, rec)
        if self.disk_dir is not None:
            self._save(key, rec)

    def _remember(self, key: str, rec: Record) -> None:
        size = _nbytes(rec)
        if size > self.max_bytes:
            return
        if key in self._mem:
            self._bytes -= _nbytes(self._mem.pop(key))
        self._mem[key] = rec
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._mem.popitem(last=False)
            self._bytes -= _nbytes(old)

    def _file(self, key: str) -> Path:
        assert self.disk_dir is not None
        return self.disk_dir / key[:2] / f"{key}.safetensors"

    def _save(self, key: str, rec: Record) -> None:
        from safetensors.torch import save_file

        path = self._file(key)
        if path.exists():
            return
        names: dict[int, str] = {}  # a tensor shared by two slots (e.g. hidden_states[-1]) is stored once
        tensors: dict[str, torch.Tensor] = {}
        for slot, t in _tensors(rec):
            if id(t) not in names:
                names[id(t)] = slot
                tensors[slot] = t.contiguous()
        layout: dict[str, Any] = {}
        for field, v in rec.items():
            if isinstance(v, tuple):
                layout[field] = ["tuple", [None if t is None else names[id(t)] for t in v]]
            else:
                layout[field] = ["none"] if v is None else ["tensor", names[id(v)]]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"layout": json.dumps(layout)})
        os.replace(tmp, path)

    def _load(self, key: str) -> Record | None:
        from safetensors import safe_open

        path = self._file(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                layout = json.loads(f.metadata()["layout"])
                loaded = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no iter)
                rec: Record = {}
                for field, (kind, *rest) in layout.items():
                    if kind == "tuple":
                        rec[field] = tuple(None if name is None else loaded[name] for name in rest[0])
                    else:
                        rec[field] = loaded[rest[0]] if kind == "tensor" else None
            return rec
        except Exception as e:  # a torn or foreign file is a miss, never a wrong answer
            log.warning("ignoring unreadable feature cache file %s (%s)", path, e)
            return None


def _split(out: Any, sizes: list[int]) -> list[Record] | None:
    """Split a tower output along dim 0 into per-image records; None when a field cannot be split."""
    n = sum(sizes)
    fields = dict(out.items()) if hasattr(out, "items") else None
    if fields is None:
        return None
    recs: list[Record] = [{} for _ in sizes]
    memo: dict[tuple[Any, ...], list[torch.Tensor]] = {}  # the same tensor in two fields is split once

    def pieces(t: torch.Tensor) -> list[torch.Tensor]:
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        if key not in memo:
            memo[key] = [p.detach().cpu() for p in torch.split(t, sizes)]
        return memo[key]

    for name, v in fields.items():
        parts: list[Any]
        if v is None:
            parts = [None] * len(sizes)
        elif torch.is_tensor(v) and v.shape[:1] == (n,):
            parts = pieces(v)
        elif isinstance(v, tuple) and all(
            t is None or (torch.is_tensor(t) and t.shape[:1] == (n,)) for t in v
        ):
            cols = [[None] * len(sizes) if t is None else pieces(t) for t in v]
            parts = [tuple(col[i] for col in cols) for i in range(len(sizes))]
        else:
            return None
        for rec, p in zip(recs, parts, strict=True):
            rec[name] = p
    return recs


def _join(recs: list[Record], device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, first in recs[0].items():
        if first is None:
            out[name] = None
        elif isinstance(first, tuple):
            out[name] = tuple(
                None if first[i] is None else torch.cat([r[name][i] for r in recs]).to(device)
                for i in range(len(first))
            )
        else:
            out[name] = torch.cat([r[name] for r in recs]).to(device)
    return out


class CachedTower:
    """Wraps one tower module's ``forward``.

    ``kind`` says how the input splits into images: ``"batch"`` (dim 0 of the pixels, LLaVA,
    Idefics) or ``"grid"`` (Qwen2-VL's flattened patches, split by ``grid_thw``; its merger is
    the trainable projector and is applied after the cache).
    """

    def __init__(
        self,
        module: nn.Module,
        cache: FeatureCache,
        tower_id: str,
        kind: str,
        merger: Callable[[], nn.Module] | None = None,
        bf16: bool = False,
    ) -> None:
        self.module, self.cache, self.tower_id, self.kind = module, cache, tower_id, kind
        self.merger, self.bf16 = merger, bf16
        self.original = module.forward
        self.signature = inspect.signature(self.original)
        self.disabled = False
        self.out_cls: type = _default_output_class()
        module.forward = self.forward  # instance attribute shadows the class method

    def remove(self) -> None:
        if self.module.__dict__.get("forward") == self.forward:
            del self.module.forward

    def _bypass(self) -> bool:
        """A tower that trains (or a caller asking for attentions) must run for real."""
        skip = "merger." if self.kind == "grid" else None
        return self.disabled or any(
            p.requires_grad for n, p in self.module.named_parameters() if not (skip and n.startswith(skip))
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._bypass():
            return self.original(*args, **kwargs)
        params = dict(self.signature.bind(*args, **kwargs).arguments)
        params.update(params.pop("kwargs", {}))
        first = next(iter(self.signature.parameters))
        pixels = params.pop(first)
        if (
            not torch.is_tensor(pixels)
            or pixels.shape[0] == 0
            or params.get("output_attentions")
            or params.get("return_dict") is False
        ):
            return self.original(*args, **kwargs)
        if self.kind == "grid":
            sizes = params["grid_thw"].prod(-1).tolist()
            row_args = {"grid_thw": params.pop("grid_thw")}
        else:
            sizes = [1] * pixels.shape[0]
            row_args = {
                k: v for k, v in params.items() if torch.is_tensor(v) and v.shape[:1] == pixels.shape[:1]
            }
        static = {k: v for k, v in params.items() if k not in row_args}
        chunks = torch.split(pixels, sizes)
        # rows that came from the pixel memo carry their digest (see known_digests)
        known = known_digests(pixels) if self.kind == "batch" else None
        keys = self._keys(chunks, row_args, static, known)
        recs: list[Record | None] = [self.cache.get(k) for k in keys]
        todo: dict[str, int] = {}  # key -> first row that misses (duplicates in a batch run once)
        for i, (k, r) in enumerate(zip(keys, recs, strict=True)):
            if r is None and k not in todo:
                todo[k] = i
        self.cache.misses += len(todo)
        self.cache.hits += len(keys) - len(todo)
        out = None
        if todo:
            miss = list(todo.values())
            sub = {k: v[miss] for k, v in row_args.items()}
            sub_pixels = torch.cat([chunks[i] for i in miss]) if self.kind == "grid" else pixels[miss]
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out = self.original(**{first: sub_pixels}, **sub, **static)
            if self.bf16:  # the model downstream is fp32
                out = _as_float32(out)
            if self.kind == "grid":  # only the pre-merger states are frozen; pooler_output is merged
                out = {"last_hidden_state": out.last_hidden_state}
            else:
                self.out_cls = type(out)
            computed = _split(out, [sizes[i] for i in miss])
            if computed is None:
                log.warning(
                    "feature cache: %s output cannot be split per image; caching disabled",
                    type(self.module).__name__,
                )
                self.disabled = True
                return self.original(*args, **kwargs)
            fresh = dict(zip(todo, computed, strict=True))
            for k, rec in fresh.items():
                self.cache.put(k, rec)
            recs = [fresh[k] if r is None else r for k, r in zip(keys, recs, strict=True)]
        if self.kind == "grid":
            # The merger is the trainable projector: always apply it to the (cached) tower states.
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            hidden = torch.cat([r["last_hidden_state"] for r in recs]).to(pixels.device)  # type: ignore[index]
            return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=self.merger()(hidden))
        if out is not None and len(todo) == len(keys):
            return out  # nothing cached, no duplicates: exactly the uncached call
        return self.out_cls(**_join(recs, pixels.device))  # type: ignore[arg-type]

    def _keys(
        self,
        chunks: tuple[torch.Tensor, ...],
        row_args: dict[str, torch.Tensor],
        static: dict[str, Any],
        known: list[bytes] | None = None,
    ) -> list[str]:
        """One key per image: tower identity, call settings that change the output, pixels, per-image args."""
        settings = sorted(
            (k, tensor_digest(v).hex() if torch.is_tensor(v) else repr(v))
            for k, v in static.items()
            if k not in _IRRELEVANT
        )
        prefix = self.tower_id.encode() + repr(settings).encode()
        keys = []
        for i, chunk in enumerate(chunks):
            h = hashlib.blake2b(prefix + (known[i] if known else tensor_digest(chunk)), digest_size=20)
            for v in row_args.values():
                h.update(tensor_digest(v[i]))
            keys.append(h.hexdigest())
        return keys


def _as_float32(out: Any) -> Any:
    """``out`` (a model output or dict) with every half-precision tensor in it cast to fp32."""
    for k, v in list(out.items()):
        if torch.is_tensor(v) and v.is_floating_point() and v.dtype != torch.float32:
            out[k] = v.float()
    return out


def _default_output_class() -> type:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling


def find_tower(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The vision tower submodule (name relative to ``model``), by the names transformers VLMs use."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in _TOWER_NAMES and "language_model" not in name:
            return name, module
    return None


def install_feature_cache(
    model: nn.Module, cache: FeatureCache, extra: dict[str, Any] | None = None, bf16: bool = False
) -> CachedTower | None:
    """Wrap ``model``'s vision tower with ``cache``; None (and a log line) when the tower is unknown.

    ``bf16`` encodes misses under CPU bf16 autocast (``extra`` should say so, for the tower id).
    """
    found = find_tower(model)
    if found is None:
        log.info("feature cache: no vision tower found in %s; running uncached", type(model).__name__)
        return None
    name, tower = found
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if model_type == "qwen2_vl" and hasattr(tower, "merger"):
        tower_id = tower_fingerprint(tower, extra, skip="merger.")
        cached = CachedTower(tower, cache, tower_id, "grid", merger=lambda: tower.merger, bf16=bf16)
    elif model_type in ("qwen2_5_vl", "qwen3_vl"):
        log.info("feature cache: %s towers reorder windows around the merger; running uncached", model_type)
        return None
    else:
        cached = CachedTower(tower, cache, tower_fingerprint(tower, extra), "batch", bf16=bf16)
    log.info("feature cache on %s (%s), tower id %s", name, type(tower).__name__, cached.tower_id[:12])
    return cached
