"""The Hugging Face VLM backend: load any local image-text-to-text model, sample, chat, train, merge.

One class serves every stage: ``generate`` (descriptions, synthetic answers, rejection samples,
evaluation), ``train_lora`` (SFT), ``merge`` (a standalone checkpoint for the next round or for
serving), ``loss`` (diagnostics). It works with any model directory that
``AutoModelForImageTextToText`` loads (LLaVA, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Idefics3,
Gemma 3, InternVL, the embedded base model...), building prompts with the directory's own chat
template.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from selfsynth.errors import ConfigError, SelfsynthError
from selfsynth.models import pixel_memo
from selfsynth.models.chat import (
    ImageLike,
    PromptCache,
    build_messages,
    encode,
    image_key,
    normalize_messages,
    open_image,
    render,
)
from selfsynth.models.decode import decode, uniforms
from selfsynth.models.devices import attention_for, cpu_bf16, resolve_device, resolve_dtype
from selfsynth.models.features import CachedTower, FeatureCache, find_tower, install_feature_cache
from selfsynth.models.model_dir import check_model_dir

log = logging.getLogger(__name__)

PROMPT_CACHE_SIZE = 4096  # rendered prompts kept; a server sees a new question with every request

__all__ = ["VLM", "build_messages", "check_model_dir"]


class VLM:
    """A loaded vision-language model with its processor; see the module docstring."""

    def __init__(
        self,
        path: Path,
        model: Any,
        processor: Any,
        device: torch.device,
        dtype: torch.dtype,
        features: FeatureCache | None = None,
        tower: CachedTower | None = None,
    ) -> None:
        self.path, self.model, self.processor, self.device, self.dtype = path, model, processor, device, dtype
        self.features, self.tower = features, tower
        tok = processor.tokenizer
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos_list = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in [*eos_list, tok.eos_token_id] if e is not None}
        if not self.eos_ids:
            raise SelfsynthError(
                f"{path}: neither the tokenizer nor generation_config.json names an EOS token; "
                "set eos_token in tokenizer_config.json"
            )
        # Training targets end at one of these (the tokenizer's EOS first), as generation does.
        first = [tok.eos_token_id] if tok.eos_token_id in self.eos_ids else []
        self.end_tokens = tuple(tok.convert_ids_to_tokens([*first, *sorted(self.eos_ids - set(first))]))
        self._prompts = PromptCache(processor, PROMPT_CACHE_SIZE)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        feature_cache: bool = True,
        feature_cache_dir: str | Path | None = None,
        feature_cache_bytes: int = 1 << 30,
        adapter: str | Path | None = None,
        attention: str = "auto",
        pixel_memo_bytes: int = 1 << 30,
        encode_precision: str = "fp32",
    ) -> VLM:
        """Load a local model directory (optionally with a LoRA adapter on top); never touches a hub.

        ``attention``: "auto" (eager on CPU, the library default elsewhere; see
        ``devices.attention_for``) or an implementation name transformers knows.
        ``pixel_memo_bytes``: processed images kept per model load (``pixel_memo``; 0: none).
        ``encode_precision``: "bf16" (or "auto", measured) runs the cached tower's misses under
        CPU bf16 autocast when the model is fp32 on CPU; its features are cached apart from fp32 ones.
        """
        from transformers import AutoConfig, AutoModelForImageTextToText
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        import selfsynth  # noqa: F401  (registers the embedded model's custom tower)
        from selfsynth.models.processors import load_processor

        p = check_model_dir(path)
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        attn = attention_for(attention, dev)
        try:
            config = AutoConfig.from_pretrained(p)
        except (ValueError, OSError) as e:
            raise SelfsynthError(f"{p}: cannot read config.json ({e})") from None
        not_vlm = SelfsynthError(
            f"{p}: not an image-text-to-text model (model_type={config.model_type!r}); "
            "model.path must be a vision-language model such as LLaVA, Qwen2-VL or Idefics3"
        )
        known = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        if not known and getattr(config, "vision_config", None) is None:
            raise not_vlm  # checked first: transformers' own error imports every model config (seconds)
        try:
            extra = {"attn_implementation": attn} if attn else {}
            model = AutoModelForImageTextToText.from_pretrained(p, config=config, dtype=torch_dtype, **extra)
        except ValueError as e:
            if attn and "attention" in str(e).lower():
                raise ConfigError(
                    f"{p}: this model cannot load with model.attention={attention!r} ({e}); "
                    "use model.attention=auto"
                ) from None
            raise not_vlm from None
        model.to(dev).eval()
        found = find_tower(model)
        if found is not None:
            found[1].requires_grad_(False)  # the vision tower is frozen in every stage
        processor = load_processor(p)
        if pixel_memo_bytes > 0:
            pixel_memo.attach(processor, pixel_memo_bytes)
        cache = tower = None
        if feature_cache:
            cache = FeatureCache(max_bytes=feature_cache_bytes, disk_dir=feature_cache_dir)
            bf16 = dev.type == "cpu" and torch_dtype == torch.float32 and cpu_bf16(encode_precision, "encode")
            extra = {"dtype": str(torch_dtype), **({"encode": "bf16"} if bf16 else {})}
            tower = install_feature_cache(model, cache, extra=extra, bf16=bf16)
            if tower is None:
                cache = None
        vlm = cls(p, model, processor, dev, torch_dtype, cache, tower)
        if adapter is not None:
            vlm.load_adapter(adapter)
        log.info("loaded %s from %s on %s (%s)", type(model).__name__, p, dev, torch_dtype)
        return vlm

    def load_adapter(self, adapter_dir: str | Path) -> None:
        """Put a trained LoRA adapter (with its projector weights) on top of the model, unmerged."""
        from peft import PeftModel

        from selfsynth.models.lora import quiet_peft

        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise SelfsynthError(
                f"{adapter_dir}: no adapter_config.json; pass the adapter/ folder that train_lora wrote"
            )
        with quiet_peft():
            self.model = PeftModel.from_pretrained(self.model, adapter_dir).to(self.device).eval()

    @property
    def feature_stats(self) -> dict[str, int]:
        """Hits and misses of the frozen-tower feature cache (zeros when it is off)."""
        if self.features is None:
            return {"hits": 0, "misses": 0, "disk_hits": 0, "entries": 0, "bytes": 0}
        return self.features.stats()

    def prompt(self, question: str) -> str:
        """The rendered chat prompt (one image + ``question``, generation prompt added)."""
        return self._prompts(question)

    def generate(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        share_prefill: bool = True,
        no_repeat_ngram: int = 0,
        allow_repeats: Sequence[str] = (),
    ) -> list[list[str]]:
        """``n`` answers per (image, prompt) pair, in order; greedy (n identical copies) when temperature is 0.

        The image and prompt are encoded once and the n samples decode from that one prefill.
        Sample j of a pair is seeded by (seed, the image's content hash, prompt, how many times
        this pair occurred before in the call, j), so it depends neither on ``batch_size`` nor
        on the other pairs nor on where the image file lives. ``no_repeat_ngram`` > 1 bans
        repeating that many generated tokens, except inside the phrases of ``allow_repeats``
        (class names; see ``decode.repeat_bans``).
        """
        if len(images) != len(prompts):
            raise ValueError(f"generate: {len(images)} images but {len(prompts)} prompts")
        return self._run(
            list(images),
            [self.prompt(p) for p in prompts],
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            share_prefill=share_prefill,
            no_repeat_ngram=no_repeat_ngram,
            allowed_pairs=self._pairs(allow_repeats) if no_repeat_ngram > 1 else frozenset(),
        )

    def _pairs(self, phrases: Sequence[str]) -> frozenset[tuple[int, int]]:
        """Consecutive token pairs of ``phrases`` at a start and mid-sentence, with what ends them."""
        tok = self.processor.tokenizer
        out: set[tuple[int, int]] = set()
        for phrase in phrases:
            for text in (phrase, " " + phrase + ".", " " + phrase + ","):
                ids = tok(text, add_special_tokens=False)["input_ids"]
                out.update(zip(ids, ids[1:], strict=False))
        return frozenset(out)

    def chat(
        self,
        image: ImageLike,
        messages: list[dict[str, Any]],
        *,
        allow_repeats: Sequence[str] = (),
        **gen_kwargs: Any,
    ) -> str:
        """Answer a multi-turn conversation about ``image`` (the image goes in the first user turn).

        ``no_repeat_ngram`` and ``allow_repeats`` work as in ``generate``.
        """
        prompt = render(self.processor, normalize_messages(messages))
        gen_kwargs.pop("n", None)
        if gen_kwargs.get("no_repeat_ngram", 0) > 1 and allow_repeats:
            gen_kwargs["allowed_pairs"] = self._pairs(allow_repeats)
        return self._run([image], [prompt], n=1, **gen_kwargs)[0][0]

    def _run(
        self,
        images: list[ImageLike],
        rendered: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        share_prefill: bool = True,
        no_repeat_ngram: int = 0,
        allowed_pairs: frozenset[tuple[int, int]] = frozenset(),
    ) -> list[list[str]]:
        if n < 1 or batch_size < 1 or max_new_tokens < 1:
            raise ValueError("generate: n, batch_size and max_new_tokens must be >= 1")
        greedy = temperature <= 0
        n_dec = 1 if greedy else n
        stream = _stream_ids([image_key(im) for im in images], rendered)
        self.model.eval()
        out: list[list[str]] = []
        tok = self.processor.tokenizer
        starts = range(0, len(images), batch_size)
        for s in tqdm(starts, desc="generate", disable=not progress, leave=False):
            imgs = [open_image(im) for im in images[s : s + batch_size]]
            enc = encode(self.processor, imgs, rendered[s : s + batch_size], side="left")
            u = None
            if not greedy:
                keys = [
                    (seed % (1 << 63), *stream[i], j) for i in range(s, s + len(imgs)) for j in range(n_dec)
                ]
                u = uniforms(keys, max_new_tokens)
            ids = decode(
                self.model,
                enc,
                n=n_dec,
                max_new_tokens=max_new_tokens,
                eos_ids=self.eos_ids,
                temperature=temperature,
                top_p=top_p,
                u=u,
                share_prefill=share_prefill,
                no_repeat_ngram=no_repeat_ngram,
                allowed_pairs=allowed_pairs,
            )
            texts = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
            for i in range(len(imgs)):
                group = texts[i * n_dec : (i + 1) * n_dec]
                out.append(group * n if greedy else group)
        return out

    def loss(self, images: Sequence[ImageLike], questions: Sequence[str], answers: Sequence[str]) -> float:
        """Mean cross-entropy over answer + EOS tokens (prompt, image and pad positions excluded)."""
        from selfsynth.models.sft import batch_for, token_loss

        batch = batch_for(self, [open_image(i) for i in images], list(questions), list(answers))
        self.model.eval()
        with torch.no_grad():
            total, count = token_loss(self.model, batch, self.device)
        return float(total / max(count, 1))

    def answer_logprobs(
        self,
        images: Sequence[ImageLike],
        questions: Sequence[str],
        answers: Sequence[str],
        *,
        batch_size: int = 32,
    ) -> list[float]:
        """Summed log-probability of each answer (without its EOS) given its image and question."""
        from selfsynth.models.sft import answer_logprobs, batch_for

        self.model.eval()
        out: list[float] = []
        for i in range(0, len(answers), batch_size):
            batch = batch_for(
                self,
                [open_image(x) for x in images[i : i + batch_size]],
                list(questions[i : i + batch_size]),
                list(answers[i : i + batch_size]),
            )
            with torch.no_grad():
                out.extend(answer_logprobs(self.model, batch, self.device).tolist())
        return out

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
        """LoRA SFT on ``examples`` (QA records); see ``selfsynth.models.sft.train_lora``."""
        from selfsynth.models.sft import train_lora

        return train_lora(self, list(examples), cfg, out_dir, seed=seed, progress=progress, **kwargs)

    def merge(self, adapter_dir: str | Path, out_dir: str | Path) -> Path:
        """Write base model + adapter as one standalone checkpoint; see ``selfsynth.models.merge``."""
        from selfsynth.models.merge import merge_adapter

        return merge_adapter(self.path, adapter_dir, out_dir)


def _stream_ids(keys: list[str], prompts: list[str]) -> list[tuple[int, int]]:
    """Two 32-bit words per pair from (image, prompt, occurrence index of that pair in this call)."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for k, p in zip(keys, prompts, strict=True):
        occ = seen.get((k, p), 0)
        seen[(k, p)] = occ + 1
        d = hashlib.blake2b(f"{k}\x00{p}\x00{occ}".encode(), digest_size=8).digest()
        out.append((int.from_bytes(d[:4], "little"), int.from_bytes(d[4:], "little")))
    return out
