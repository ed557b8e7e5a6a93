"""Fold a LoRA adapter (and its trained projector) into the base model: one standalone checkpoint.

The result is a plain Hugging Face model directory (weights, config, processor, tokenizer, chat
template) that ``AutoModelForImageTextToText.from_pretrained(dir)`` loads (after
``import selfsynth`` for the embedded model's custom tower) and that vLLM can serve. The merge
runs on a fresh CPU copy of the base in float32, so the in-memory model is untouched and the
rounding happens once, when the weights are cast back to the base checkpoint's dtype.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from selfsynth.errors import SelfsynthError

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".gguf")
_WRITTEN_BY_MODEL = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _saved_dtype(config) -> torch.dtype:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Write base + adapter merged into ``out_dir`` (atomically: a temp folder renamed at the end)."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForImageTextToText

    import selfsynth  # noqa: F401  (registers the embedded model's custom tower)
    from selfsynth.models.lora import quiet_peft
    from selfsynth.models.model_dir import check_model_dir

    base = check_model_dir(base_dir)
    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise SelfsynthError(
            f"{adapter}: no adapter_config.json; pass the adapter/ folder that train_lora wrote"
        )
    out = Path(out_dir)
    config = AutoConfig.from_pretrained(base)
    target = _saved_dtype(config)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    with quiet_peft():
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(target)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    _copy_processor_files(base, tmp)
    (tmp / "selfsynth_merge.json").write_text(
        json.dumps(
            {"base": str(base.resolve()), "adapter": str(adapter.resolve()), "dtype": str(target)}, indent=2
        )
        + "\n",
        encoding="utf-8",
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    log.info("merged %s + %s into %s (%s)", base, adapter, out, target)
    return out


def _copy_processor_files(base: Path, dest: Path) -> None:
    """Everything of the base directory that is not weights or model config: processor, tokenizer, template."""
    for item in base.iterdir():
        if (
            item.name in _WRITTEN_BY_MODEL
            or item.name.endswith(_WEIGHT_SUFFIXES)
            or item.name.startswith(".")
        ):
            continue
        # The base's card describes the base; the loop writes the merged model's own (report.model_card).
        if item.name in ("selfsynth_merge.json", "README.md"):
            continue
        target = dest / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif not target.exists():
            shutil.copy2(item, target)


def ship_decoding(model_dir: str | Path, *, max_new_tokens: int, no_repeat_ngram: int = 0) -> Path:
    """Write the evaluated decoding into ``model_dir``'s ``generation_config.json``.

    A plain ``model.generate(**inputs)`` then decodes as the evaluation did, as far as
    transformers can say it: greedy, the same answer length, and ``no_repeat_ngram_size`` for the
    repeat guard (which in transformers also counts the prompt and has no exception for class
    names, see ``decode.repeat_bans``). The exact settings go in ``selfsynth_decoding.json``.
    """
    from transformers import GenerationConfig

    path = Path(model_dir)
    try:
        gen = GenerationConfig.from_pretrained(path)
    except OSError:
        gen = GenerationConfig()
    gen.do_sample = False
    gen.num_beams = 1
    gen.max_new_tokens = max_new_tokens
    gen.no_repeat_ngram_size = no_repeat_ngram if no_repeat_ngram > 1 else 0
    for name in ("temperature", "top_p", "top_k"):  # sampling-only values would warn under greedy
        setattr(gen, name, None)
    tmp = path / ".generation.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    gen.save_pretrained(tmp)
    os.replace(tmp / "generation_config.json", path / "generation_config.json")
    shutil.rmtree(tmp, ignore_errors=True)
    exact = {
        "greedy": True,
        "max_new_tokens": max_new_tokens,
        "no_repeat_ngram": no_repeat_ngram,
        "repeat_guard": "generated tokens only; class-name word pairs may repeat (selfsynth.models.decode)",
    }
    tmp_file = path / ".selfsynth_decoding.json.tmp"
    tmp_file.write_text(json.dumps(exact, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_file, path / "selfsynth_decoding.json")
    return path
