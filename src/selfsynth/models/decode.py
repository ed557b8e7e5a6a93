"""Shared-prefill decoding: encode each image + prompt once, then decode n continuations of it.

``transformers.generate(num_return_sequences=n)`` expands the batch before the prefill, so the
prompt (hundreds of image tokens on LLaVA) runs through the language model n times. Here the
prefill runs once per prompt, its KV cache is repeated n times, and only the decode steps run on
B x n rows; finished rows leave the batch. Sampling is inverse-CDF with one uniform number per
(row, step) taken from a per-row seeded stream, so a sample depends on its seed key, not on
which batch it landed in or how many other rows there were.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def _new_cache(model: nn.Module, capacity: int = 0) -> Any:
    """A dynamic KV cache; with ``capacity`` (prompt + new tokens), one that writes into buffers of
    that length instead of concatenating at every step (which copies the whole cache each token)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    except TypeError:
        cache = DynamicCache()
    layers = getattr(cache, "layers", None)
    if capacity > 0 and layers and all(type(layer) is _dynamic_layer() for layer in layers):
        cache.layers = [_GrowingLayer(capacity) for _ in layers]
    return cache


def _dynamic_layer() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


class _GrowingLayer(_dynamic_layer()):  # type: ignore[misc]
    """A ``DynamicLayer`` whose keys and values are views into preallocated buffers.

    ``keys`` / ``values`` are the first ``n`` positions of buffers sized for the whole generation,
    so appending a token writes one slot; the buffers grow (doubling) only past that size.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.n = capacity, 0
        self._k = self._v = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.n + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            self._grow(key_states, value_states, max(end, self.capacity, 2 * self.n))
        self._k[..., self.n : end, :] = key_states
        self._v[..., self.n : end, :] = value_states
        self.n = end
        self._views()
        return self.keys, self.values

    def _grow(self, k: torch.Tensor, v: torch.Tensor, length: int) -> None:
        new_k = k.new_empty((*k.shape[:-2], length, k.shape[-1]))
        new_v = v.new_empty((*v.shape[:-2], length, v.shape[-1]))
        if self._k is not None and self.n:
            new_k[..., : self.n, :] = self._k[..., : self.n, :]
            new_v[..., : self.n, :] = self._v[..., : self.n, :]
        self._k, self._v = new_k, new_v

    def _views(self) -> None:
        self.keys, self.values = self._k[..., : self.n, :], self._v[..., : self.n, :]

    def get_seq_length(self) -> int:
        return self.n if self.is_initialized else 0

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.n:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.n:
            self._k, self._v = self._k[indices, ...], self._v[indices, ...]
            self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if tokens_to_remove and self.is_initialized:
            self.n = max(0, self.n + tokens_to_remove)
            self._views()

    def reset(self) -> None:
        self._k = self._v = None
        self.n = 0
        super().reset()


def accepts(model: nn.Module, name: str) -> bool:
    """Whether the underlying transformers model's forward takes ``name`` (seen through DDP and peft)."""
    base = getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return name in inspect.signature(base.forward).parameters


def position_ids(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Position ids for a left-padded prompt batch, as ``generate`` would make them (M-RoPE included)."""
    mask = inputs["attention_mask"]
    prepare = getattr(model, "_prepare_position_ids_for_generation", None)
    if prepare is not None:
        kwargs = {k: v for k, v in inputs.items() if k not in ("pixel_values",)}
        return prepare(inputs["input_ids"], kwargs)
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def uniforms(keys: Sequence[tuple[int, ...]], steps: int) -> torch.Tensor:
    """``[len(keys), steps]`` uniforms in [0, 1), one independent seeded stream per key."""
    return torch.from_numpy(np.stack([np.random.default_rng(list(k)).random(steps) for k in keys]))


NUCLEUS_SCAN = 64  # tokens sorted for top-p before falling back to the whole vocabulary


def pick(logits: torch.Tensor, u: torch.Tensor | None, temperature: float, top_p: float) -> torch.Tensor:
    """Next token per row: argmax when greedy, else inverse-CDF sampling from the top-p nucleus."""
    if u is None or temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        # The nucleus almost always lies within the most likely NUCLEUS_SCAN tokens: sorting only
        # those gives the same prefix, and so the same token, for a fraction of a full sort's time.
        top, order = probs.topk(min(NUCLEUS_SCAN, probs.shape[-1]), dim=-1)
        if not bool((top.sum(-1) >= top_p).all()):
            top, order = probs.sort(dim=-1, descending=True)
        before = top.cumsum(-1) - top
        probs = top.masked_fill(before >= top_p, 0.0)  # keep the smallest prefix reaching top_p
    cdf = probs.double().cumsum(-1)
    x = u.to(cdf.device, torch.float64).unsqueeze(-1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, x, right=True).clamp_max(cdf.shape[-1] - 1).squeeze(-1)
    return idx if order is None else order.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


def repeat_bans(
    generated: Sequence[int], n: int, allowed_pairs: frozenset[tuple[int, int]] = frozenset()
) -> list[int]:
    """Tokens that would complete a run of ``n`` tokens already in ``generated`` (its own span only).

    Unlike ``transformers``' ``no_repeat_ngram_size``, the prompt does not count, so copying a
    label or a concept from the prompt stays possible; a token whose pair with the previous one
    is in ``allowed_pairs`` (the word pieces of class names) is never banned, so an explanation
    can name its class twice ("This is a X. ... the features of a X.").
    """
    if n < 2 or len(generated) < n - 1:
        return []
    tail = tuple(generated[len(generated) - n + 1 :])
    banned = []
    for i in range(len(generated) - n + 1):
        if tuple(generated[i : i + n - 1]) == tail:
            t = generated[i + n - 1]
            if (tail[-1], t) not in allowed_pairs:
                banned.append(t)
    return banned


@torch.inference_mode()
def decode(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    n: int,
    max_new_tokens: int,
    eos_ids: set[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    u: torch.Tensor | None = None,
    share_prefill: bool = True,
    no_repeat_ngram: int = 0,
    allowed_pairs: frozenset[tuple[int, int]] = frozenset(),
) -> list[list[int]]:
    """Generated token ids (EOS excluded) for each of the B x n rows, prompt-major (row = b * n + j).

    ``u`` holds the uniforms (``[B * n, max_new_tokens]``) for sampling; None means greedy.
    ``share_prefill=False`` expands the prompt batch first, like ``num_return_sequences`` (for
    benchmarks and tests: the samples are the same, only slower). ``no_repeat_ngram`` > 1 bans
    repeating a run of that many generated tokens (``repeat_bans``): a small model's greedy
    explanations otherwise loop ("red bill, red bill, red bill and ...").
    """
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    pos = position_ids(model, inputs)
    batch_dim = 1 if pos.ndim == 3 else 0
    mask = inputs["attention_mask"]
    rows = mask.shape[0]
    if not share_prefill and n > 1:
        inputs = _expand_prompts(inputs, n, _image_token_id(model))
        pos = pos.repeat_interleave(n, dim=batch_dim)
        mask = inputs["attention_mask"]
    cache = _new_cache(model, int(mask.shape[1]) + max_new_tokens)
    cache_kw = "cache" if accepts(model, "cache") else "past_key_values"
    extra = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    out = model(**inputs, position_ids=pos, use_cache=True, **{cache_kw: cache}, **extra)
    logits = out.logits[:, -1].float()
    del out
    if share_prefill and n > 1:
        cache.batch_repeat_interleave(n)
        mask = mask.repeat_interleave(n, dim=0)
        pos = pos.repeat_interleave(n, dim=batch_dim)
        logits = logits.repeat_interleave(n, dim=0)
    total = rows * n
    alive = torch.arange(total, device=device)
    results: list[list[int]] = [[] for _ in range(total)]
    eos = torch.tensor(sorted(eos_ids), device=device, dtype=torch.long)
    for step in range(max_new_tokens):
        step_u = None if u is None else u[alive.cpu(), step]
        if no_repeat_ngram > 1:
            for k, r in enumerate(alive.tolist()):
                banned = repeat_bans(results[r], no_repeat_ngram, allowed_pairs)
                if banned:
                    logits[k, banned] = float("-inf")
        nxt = pick(logits, step_u, temperature, top_p)
        done = torch.isin(nxt, eos)
        for r, t, d in zip(alive.tolist(), nxt.tolist(), done.tolist(), strict=True):
            if not d:
                results[r].append(t)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, nxt, mask = alive[keep], nxt[keep], mask[keep]
            pos = pos.index_select(batch_dim, keep)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        pos = torch.cat([pos, pos[..., -1:] + 1], dim=-1)
        out = model(
            input_ids=nxt.unsqueeze(-1),
            attention_mask=mask,
            position_ids=pos[..., -1:],
            use_cache=True,
            **{cache_kw: cache},
        )
        logits = out.logits[:, -1].float()
        del out
    return results


def _image_token_id(model: nn.Module) -> int | None:
    cfg = getattr(getattr(model, "module", model), "config", None)
    found = getattr(cfg, "image_token_id", None)
    return found if found is not None else getattr(cfg, "image_token_index", None)


def _pixel_rows(inputs: dict[str, torch.Tensor], image_token_id: int | None) -> list[int] | None:
    """Pixel rows per prompt when images are tiled into a varying number of rows (InternVL).

    Each tile gives the same number of image tokens, so a prompt's share of the pixel rows is its
    share of the image tokens; None when that does not divide evenly.
    """
    rows = inputs["pixel_values"].shape[0]
    if image_token_id is None or rows == 0:
        return None
    per_prompt = (inputs["input_ids"] == image_token_id).sum(-1)
    per_tile, left = divmod(int(per_prompt.sum()), rows)
    if left or per_tile == 0 or bool((per_prompt % per_tile).any()):
        return None
    return (per_prompt // per_tile).tolist()


def _expand_prompts(
    inputs: dict[str, torch.Tensor], n: int, image_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """Repeat every prompt n times, image tensors included (flattened-patch and tiled layouts by image)."""
    rows = inputs["input_ids"].shape[0]
    out = {}
    for k, v in inputs.items():
        if not torch.is_tensor(v):
            out[k] = v
            continue
        sizes = None
        if k == "pixel_values" and "image_grid_thw" in inputs:
            sizes = inputs["image_grid_thw"].prod(-1).tolist()
        elif k == "pixel_values" and v.shape[0] != rows:
            sizes = _pixel_rows(inputs, image_token_id)
        if sizes is not None:
            out[k] = torch.cat([c for c in torch.split(v, sizes) for _ in range(n)])
        elif v.shape[:1] == (rows,):
            out[k] = v.repeat_interleave(n, dim=0)
        else:
            out[k] = v
    return out
