"""A tiny random LLaVA that vLLM's CPU build can serve, saved in the layout llava-hf checkpoints have.

transformers 5 saves a LLaVA built from a config with its CLIP weights as ``vision_tower.<part>``;
released llava-hf checkpoints (and vLLM's loader) use ``vision_tower.vision_model.<part>``, so the
saved file is rewritten to that layout, which transformers loads and re-saves unchanged. The
language model has 2 heads of 64 because vLLM's CPU attention has no kernel for smaller heads.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file
from tiny_models import build_llava

HUB_PREFIX = "vision_tower.vision_model."


def build_hub_llava(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Tiny LLaVA (CLIP tower 32 px -> 16 image tokens, 2-layer Llama, hidden 128) in the llava-hf layout."""
    kw = {"hidden": 128, "vision_hidden": 128, "layers": 2, **sizes}
    out = build_llava(out, seed, **kw)
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    renamed = {
        (HUB_PREFIX + k[len("vision_tower.") :] if k.startswith("vision_tower.") else k): v
        for k, v in tensors.items()
    }
    if not any(k.startswith(HUB_PREFIX) for k in tensors):
        save_file(renamed, weights, metadata={"format": "pt"})
    return out
