"""The vLLM generation engine: sampling through ``vllm.LLM``, everything else through the HF backend.

``model.engine=vllm`` routes generation (describe, synthesize, sample, evaluate, chat) through
vLLM: one request per (image, prompt) with ``n`` samples, a per-request seed derived like the HF
backend's sample streams (seed, image content, prompt, occurrence), the image as multi-modal data
and the prompt rendered with the model directory's own chat template, so both engines feed the
model the same text. Scoring, training and merging (``answer_logprobs``, ``loss``, ``train_lora``,
``merge``) stay on Hugging Face/peft: the vLLM engine is shut down first and the HF model is
loaded on demand, because two copies of a large model rarely fit together.

A round's merged checkpoint (``selfsynth_merge.json`` names its base and adapter) is served as the
base model plus a vLLM LoRA request when ``model.vllm_lora`` is on and the adapter is plain LoRA
on the language model (no fully trained projector, i.e. ``finetune.train_projector=false``);
otherwise the merged weights are loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsynth.errors import ConfigError, SelfsynthError
from selfsynth.models.backend import free_memory
from selfsynth.models.chat import PromptCache, image_key, normalize_messages, open_image, render

if TYPE_CHECKING:
    from selfsynth.config import ModelConfig
    from selfsynth.models.vlm import VLM

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "model.engine=vllm needs the vllm package: `pip install -e .[vllm]` on a GPU machine, "
    "or `make test-vllm` for the CPU build in .venv-vllm; or set model.engine=hf"
)
MERGE_RECORD = "selfsynth_merge.json"
# vLLM accepts only these LoRA ranks for max_lora_rank.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def request_seed(seed: int, stream: tuple[int, int]) -> int:
    """A 63-bit vLLM request seed from the run seed and a pair's stream words (see ``vlm._stream_ids``)."""
    d = hashlib.blake2b(f"{seed}\x00{stream[0]}\x00{stream[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "little") >> 1


def lora_source(path: str | Path) -> tuple[Path, Path, int] | None:
    """(base, adapter, rank) when the merged checkpoint at ``path`` can be served as base + LoRA.

    None when ``path`` is not a selfsynth merge, its base or adapter is gone, or the adapter also
    trains whole modules (``modules_to_save``, e.g. the projector), which LoRA requests cannot carry.
    """
    record = Path(path) / MERGE_RECORD
    if not record.is_file():
        return None
    try:
        info = json.loads(record.read_text(encoding="utf-8"))
        base, adapter = Path(info["base"]), Path(info["adapter"])
        adapter_cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        log.info("%s: serving the merged weights (%s)", path, e)
        return None
    if not (base / "config.json").is_file():
        log.info("%s: base %s is gone; serving the merged weights", path, base)
        return None
    if adapter_cfg.get("modules_to_save"):
        log.info(
            "%s: the adapter also trains %s, which a LoRA request cannot carry; serving the merged weights",
            path,
            ", ".join(adapter_cfg["modules_to_save"]),
        )
        return None
    return base, adapter, int(adapter_cfg.get("r", 8))


class VLLMBackend:
    """A model directory served by ``vllm.LLM``; see the module docstring."""

    def __init__(self, path: str | Path, cfg: ModelConfig, cache_dir: Path | None = None) -> None:
        from selfsynth.models.model_dir import check_model_dir
        from selfsynth.models.processors import load_processor

        self.path = check_model_dir(path)
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.processor = load_processor(self.path)
        self.lora = lora_source(self.path) if cfg.vllm_lora else None
        self._llm: Any = None
        self._hf: VLM | None = None
        self.prompt = PromptCache(self.processor)  # the rendered prompt of a question, as the HF backend's

    # -- engines -------------------------------------------------------------------------------

    def engine(self) -> Any:
        """The ``vllm.LLM`` for this model, started on first use (the HF model is dropped first)."""
        if self._llm is None:
            self._drop_hf()
            from selfsynth.models.devices import resolve_device, resolve_dtype
            from vllm import LLM

            c = self.cfg
            model = self.lora[0] if self.lora else self.path
            kwargs: dict[str, Any] = dict(
                model=str(model),
                tokenizer=str(self.path),
                dtype=resolve_dtype(c.dtype, resolve_device(c.device)),
                tensor_parallel_size=c.tensor_parallel_size,
                gpu_memory_utilization=c.gpu_memory_utilization,
                enforce_eager=c.enforce_eager,
                limit_mm_per_prompt={"image": 1},
                seed=0,
            )
            if c.max_model_len > 0:
                kwargs["max_model_len"] = c.max_model_len
            if _on_cpu():
                # vLLM's CPU worker cannot rewind a seeded request's generator after a partial
                # prefill ("CPU Generator does not use offset"), so prompts are never split.
                kwargs["enable_chunked_prefill"] = False
            if self.lora:
                rank = next((r for r in _LORA_RANKS if r >= self.lora[2]), self.lora[2])
                kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=rank)
            log.info("starting vLLM on %s%s", model, f" + LoRA {self.lora[1]}" if self.lora else "")
            self._llm = LLM(**kwargs)
        return self._llm

    def _lora_request(self) -> Any:
        if not self.lora:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("selfsynth-round", 1, str(self.lora[1]))

    def hf(self) -> VLM:
        """The Hugging Face backend on the same directory, loaded on first use (vLLM is shut down first)."""
        if self._hf is None:
            self.close_engine()
            from selfsynth.models.backend import load_hf

            self._hf = load_hf(self.path, self.cfg, self.cache_dir)
        return self._hf

    def close_engine(self) -> None:
        """Shut the vLLM engine (and its worker processes) down and free its memory."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        except Exception as e:  # a failed shutdown must not hide the caller's work
            log.warning("vLLM engine shutdown: %s", e)
        del llm
        free_memory()

    def _drop_hf(self) -> None:
        if self._hf is not None:
            self._hf = None
            free_memory()

    def close(self) -> None:
        """Free both engines."""
        self.close_engine()
        self._drop_hf()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: modules may already be gone
            self.close_engine()

    # -- generation ----------------------------------------------------------------------------

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
        **_: Any,
    ) -> list[list[str]]:
        """``n`` answers per (image, prompt) pair, in order; greedy (n identical copies) when temperature is 0.

        ``batch_size`` is ignored (vLLM schedules its own batches). The repeat guard
        (``no_repeat_ngram`` > 1) has no vLLM counterpart, so such calls run on the HF backend.
        """
        if len(images) != len(prompts):
            raise ValueError(f"generate: {len(images)} images but {len(prompts)} prompts")
        if no_repeat_ngram > 1:
            log.info("no_repeat_ngram=%d: generating on the HF backend", no_repeat_ngram)
            return self.hf().generate(
                images,
                prompts,
                n=n,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
                no_repeat_ngram=no_repeat_ngram,
                allow_repeats=allow_repeats,
            )
        return self._run(
            list(images),
            [self.prompt(p) for p in prompts],
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            progress=progress,
        )

    def chat(self, image: Any, messages: list[dict[str, Any]], **gen_kwargs: Any) -> str:
        """Answer a multi-turn conversation about ``image``; the repeat guard sends it to HF."""
        if gen_kwargs.get("no_repeat_ngram", 0) > 1:
            return self.hf().chat(image, messages, **gen_kwargs)
        keep = ("temperature", "top_p", "max_new_tokens", "seed")
        kwargs = {k: v for k, v in gen_kwargs.items() if k in keep}
        rendered = render(self.processor, normalize_messages(messages))
        return self._run([image], [rendered], n=1, **kwargs)[0][0]

    def _run(
        self,
        images: list[Any],
        rendered: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        seed: int = 0,
        progress: bool = False,
    ) -> list[list[str]]:
        from selfsynth.models.vlm import _stream_ids
        from vllm import SamplingParams

        if n < 1 or max_new_tokens < 1:
            raise ValueError("generate: n and max_new_tokens must be >= 1")
        if not images:
            return []
        greedy = temperature <= 0
        n_dec = 1 if greedy else n
        stream = _stream_ids([image_key(im) for im in images], rendered)
        requests = [
            {"prompt": p, "multi_modal_data": {"image": open_image(im)}}
            for im, p in zip(images, rendered, strict=True)
        ]
        params = [
            SamplingParams(
                n=n_dec,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                max_tokens=max_new_tokens,
                seed=None if greedy else request_seed(seed, s),
                detokenize=False,
            )
            for s in stream
        ]
        llm = self.engine()
        results = llm.generate(requests, params, use_tqdm=progress, lora_request=self._lora_request())
        tok = self.processor.tokenizer
        out: list[list[str]] = []
        for res in results:
            ids = [list(c.token_ids) for c in sorted(res.outputs, key=lambda c: c.index)]
            texts = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
            out.append(texts * n if greedy else texts)
        return out

    # -- scoring, training, merging: Hugging Face ----------------------------------------------

    def answer_logprobs(
        self, images: Sequence[Any], questions: Sequence[str], answers: Sequence[str], *, batch_size: int = 32
    ) -> list[float]:
        """Summed log-probability of each answer, computed by the HF backend."""
        return self.hf().answer_logprobs(images, questions, answers, batch_size=batch_size)

    def loss(self, images: Sequence[Any], questions: Sequence[str], answers: Sequence[str]) -> float:
        """Mean answer cross-entropy, computed by the HF backend."""
        return self.hf().loss(images, questions, answers)

    def train_lora(
        self,
        examples: Sequence[Any],
        cfg: Any,
        out_dir: str | Path,
        *,
        seed: int = 0,
        progress: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """LoRA SFT on HF/peft (see ``VLM.train_lora``)."""
        return self.hf().train_lora(examples, cfg, out_dir, seed=seed, progress=progress, **kwargs)

    def merge(self, adapter_dir: str | Path, out_dir: str | Path) -> Path:
        """Base + adapter as one checkpoint (see ``selfsynth.models.merge``); needs no loaded model."""
        from selfsynth.models.merge import merge_adapter

        return merge_adapter(self.path, adapter_dir, out_dir)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def load_vllm(path: str, cfg: ModelConfig, cache_dir: Path | None) -> VLLMBackend:
    """The ``vllm`` engine loader: a ConfigError naming the install command when vllm is missing."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT} ({e})") from None
    except Exception as e:  # a broken install can raise anything at import time
        raise SelfsynthError(f"vllm is installed but does not import ({type(e).__name__}: {e})") from None
    return VLLMBackend(path, cfg, cache_dir)
