"""LoRA layers computed as one matmul with ``W + s * B @ A`` when that is cheaper than two thin ones.

peft computes a LoRA linear as ``x @ W.T + s * (x @ A.T) @ B.T``: per token, forward
``in*out + r*(in+out)`` multiply-adds, and the backward pass adds the input gradient through both
paths plus the gradients of A and B, ``2*in*out + 3*r*(in+out)`` in all. The same function is
``x @ (W + s * B @ A).T``: one matmul forward, input and weight gradient backward (``3*in*out``
per token), plus a per-step cost of forming ``B @ A`` that does not grow with the batch. The
merged form wins when ``r > in*out / (3*(in+out))``: on a 7B decoder (4096 wide) that is a rank
near 700, never used; on a small decoder with the paper's rank 128 (the world's base is 192
wide) every adapted layer qualifies and a LoRA step does about half the linear-layer work.

The math is the same; rounding differs (``B @ A`` is formed in fp32 and rounded once, instead of
two bf16 products under autocast). Layers with dropout, DoRA or other variants, several active
adapters, merged weights or ``fan_in_fan_out`` keep peft's forward.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsynth.config import LORA_FORWARDS
from selfsynth.errors import ConfigError


def dense_is_cheaper(r: int, fan_in: int, fan_out: int) -> bool:
    """Whether one merged matmul costs fewer multiply-adds per token than peft's two thin ones."""
    return 3 * r * (fan_in + fan_out) > fan_in * fan_out


def _eligible(layer: nn.Module) -> str | None:
    """The one active adapter of a plain peft LoRA ``Linear`` whose forward may be merged, else None."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(layer) is not LoraLinear or layer.merged or layer.disable_adapters or layer.fan_in_fan_out:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1 or active[0] in layer.lora_variant:
        return None
    name = active[0]
    drop = layer.lora_dropout[name]
    if not (isinstance(drop, nn.Identity) or (isinstance(drop, nn.Dropout) and drop.p == 0)):
        return None
    if not isinstance(layer.base_layer, nn.Linear):
        return None
    return name


def _dense_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if args or kwargs or self.merged or self.disable_adapters:  # anything unusual: peft's own path
        return type(self).forward(self, x, *args, **kwargs)
    name = self._selfsynth_dense_adapter
    base = self.base_layer
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    with torch.autocast(x.device.type, enabled=False):
        delta = (b.float() @ a.float()) * self.scaling[name]
        weight = base.weight.float() + delta
    bias = base.bias
    if not torch.is_autocast_enabled(x.device.type):  # autocast casts both itself
        weight = weight.to(x.dtype)
        bias = bias if bias is None else bias.to(x.dtype)
    return F.linear(x, weight, bias)


@contextlib.contextmanager
def lora_forward(model: nn.Module, mode: str = "auto") -> Iterator[int]:
    """Within the block, LoRA linears of ``model`` run merged where ``mode`` says; yields their count.

    ``auto`` merges the layers where ``dense_is_cheaper``; ``dense`` every eligible layer;
    ``factored`` none (peft as is). Forwards are restored on exit, so saving, merging and
    generation afterwards see plain peft modules.
    """
    if mode not in LORA_FORWARDS:
        raise ConfigError(f"finetune.lora_forward={mode!r}: choose one of {', '.join(LORA_FORWARDS)}")
    patched: list[nn.Module] = []
    if mode != "factored":
        for layer in model.modules():
            name = _eligible(layer)
            if name is None:
                continue
            r = layer.lora_A[name].weight.shape[0]
            if mode == "auto" and not dense_is_cheaper(r, layer.in_features, layer.out_features):
                continue
            layer._selfsynth_dense_adapter = name
            layer.forward = types.MethodType(_dense_forward, layer)
            patched.append(layer)
    try:
        yield len(patched)
    finally:
        for layer in patched:
            del layer.forward
            del layer._selfsynth_dense_adapter
