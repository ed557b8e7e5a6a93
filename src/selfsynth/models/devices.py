"""Pick the device and dtype a model runs on: bf16 on CUDA, fp32 on CPU, one GPU per process.

``"auto"`` means the fastest setting that keeps training stable on the hardware found. Under
``accelerate launch`` each process sees its ``LOCAL_RANK`` and takes that GPU.
"""

from __future__ import annotations

import os

import torch

from selfsynth.config import ATTENTIONS, CPU_PRECISIONS
from selfsynth.errors import ConfigError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; anything else is taken as is."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"model.device={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"model.device={device!r} but CUDA is not available here; use model.device=auto or cpu"
        )
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA (fp16 when the GPU lacks bf16), fp32 elsewhere."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"model.dtype={dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


# Under CPU bf16 autocast, oneDNN keeps compiled kernels per tensor shape, so resident memory grows
# with every new batch length; training batches are padded to this multiple to bound the shapes.
PAD_MULTIPLE_BF16 = 16


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (padded sizes under bf16 autocast)."""
    return -(-n // multiple) * multiple


def cpu_bf16(setting: str, workload: str = "train") -> bool:
    """Whether CPU work of ``workload`` ("train" or "encode") runs under bf16 autocast.

    ``auto`` measures: a CPU may advertise bf16 instructions (AVX512-BF16) and still run a small
    model's training step slower in bf16 than in fp32, so flags decide nothing but whether bf16
    is possible at all (see ``precision_probe``).
    """
    if setting == "auto":
        from selfsynth.models.precision_probe import measured_choice

        return measured_choice(workload) == "bf16"
    if setting not in CPU_PRECISIONS:
        raise ConfigError(f"cpu_precision={setting!r} is not one of {', '.join(CPU_PRECISIONS)}")
    return setting == "bf16"


def attention_for(setting: str, device: torch.device) -> str | None:
    """The attention implementation to load a model with; None leaves transformers' default.

    "auto" means plain (eager) attention on CPU and the library default (SDPA / flash) on GPUs.
    On CPU, torch's fused SDPA kernel is slow for the short sequences and few heads of small
    models, in the backward pass above all; generation speed is the same. Eager keeps the
    attention matrix for the backward pass, which only matters for long sequences on large
    models, where ``model.attention=sdpa`` is the setting to choose.
    """
    if setting not in ATTENTIONS:
        raise ConfigError(f"model.attention={setting!r}: choose one of {', '.join(ATTENTIONS)}")
    if setting == "auto":
        return "eager" if device.type == "cpu" else None
    return setting
