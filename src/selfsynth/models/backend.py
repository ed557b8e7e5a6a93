"""The model backend protocol and its engines: what the stages, chat and the server ask of a VLM.

A backend answers n samples per (image, prompt), scores given answers, trains a LoRA adapter,
merges it into a standalone checkpoint and chats. Stages reach it only through
``Context.vlm(path)``, which calls :func:`load_backend`, so a second generation engine plugs in
by :func:`register_engine` without touching a stage.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from selfsynth.errors import ConfigError

if TYPE_CHECKING:
    from selfsynth.config import ModelConfig
    from selfsynth.models.vlm import VLM


@runtime_checkable
class Backend(Protocol):
    """A loaded vision-language model; ``selfsynth.models.vlm.VLM`` is the Hugging Face one."""

    path: Path

    def generate(
        self,
        images: Sequence[Any],
        prompts: Sequence[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        no_repeat_ngram: int = 0,
        allow_repeats: Sequence[str] = (),
    ) -> list[list[str]]:
        """``n`` answers per (image, prompt) pair, in order; sample j is seeded by the pair's content."""
        ...

    def answer_logprobs(
        self, images: Sequence[Any], questions: Sequence[str], answers: Sequence[str], *, batch_size: int = 32
    ) -> list[float]:
        """Summed log-probability of each answer given its image and question."""
        ...

    def loss(self, images: Sequence[Any], questions: Sequence[str], answers: Sequence[str]) -> float:
        """Mean cross-entropy over the answer tokens."""
        ...

    def train_lora(
        self, examples: Sequence[Any], cfg: Any, out_dir: str | Path, *, seed: int = 0, progress: bool = True
    ) -> dict[str, Any]:
        """LoRA SFT on QA records into ``out_dir/adapter``; returns training facts for the manifest."""
        ...

    def merge(self, adapter_dir: str | Path, out_dir: str | Path) -> Path:
        """Base weights + adapter as one standalone checkpoint directory."""
        ...

    def chat(self, image: Any, messages: list[dict[str, Any]], **gen_kwargs: Any) -> str:
        """One answer to a multi-turn conversation about ``image``."""
        ...


# An engine turns (model directory, model settings, feature cache folder) into a Backend.
EngineLoader = Callable[[str, "ModelConfig", "Path | None"], Backend]


def load_hf(path: str | Path, cfg: ModelConfig, cache_dir: Path | None) -> VLM:
    """The Hugging Face backend for ``path`` with the run's model settings."""
    from selfsynth.models.vlm import VLM

    return VLM.load(
        path,
        dtype=cfg.dtype,
        device=cfg.device,
        feature_cache=cfg.feature_cache,
        feature_cache_dir=cache_dir if cfg.feature_cache else None,
        attention=cfg.attention,
        encode_precision=cfg.encode_precision,
    )


def _load_vllm(path: str, cfg: ModelConfig, cache_dir: Path | None) -> Backend:
    from selfsynth.models.vllm_engine import load_vllm

    return load_vllm(path, cfg, cache_dir)


_ENGINES: dict[str, EngineLoader] = {"hf": load_hf, "vllm": _load_vllm}


def engine_names() -> tuple[str, ...]:
    """The values ``model.engine`` accepts."""
    return tuple(_ENGINES)


def register_engine(name: str, loader: EngineLoader) -> None:
    """Add a generation engine from outside the package (a plugin or a test)."""
    _ENGINES[name] = loader


def load_backend(path: str | Path, cfg: ModelConfig, *, cache_dir: Path | None = None) -> Backend:
    """The model at ``path`` through the engine ``cfg.engine`` names."""
    loader = _ENGINES.get(cfg.engine)
    if loader is None:
        close = difflib.get_close_matches(cfg.engine, list(_ENGINES), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"model.engine={cfg.engine!r}{hint}: known engines are {', '.join(_ENGINES)}")
    return loader(str(path), cfg, cache_dir)


def free_memory() -> None:
    """Return a dropped model's memory now (Python objects, then the CUDA cache) rather than at GC."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
