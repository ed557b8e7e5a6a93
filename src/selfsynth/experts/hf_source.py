"""The ``hf`` concept source: a local causal language model answers the expert prompt, greedily.

For machines with no API access: any chat-tuned causal LM saved in Hugging Face format (a
local folder; nothing is fetched) is asked the same question as the ``openai`` source, through
its tokenizer's chat template when it has one. Greedy decoding makes an answer a pure function
of (model, prompt), so answers are cached exactly like paid ones.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsynth.errors import ConfigError, ExpertError
from selfsynth.experts.base import CachedLLMSource

if TYPE_CHECKING:
    from selfsynth.config import ConceptsConfig

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_identity(path: Path) -> str:
    """Folder + a hash of its config and weight files' names and sizes (cheap, changes on re-save)."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in _WEIGHT_SUFFIXES:
            h.update(f"{f.relative_to(path).as_posix()}:{f.stat().st_size};".encode())
    return f"{path}#{h.hexdigest()[:16]}"


class HFSource(CachedLLMSource):
    """Concepts from a local ``AutoModelForCausalLM`` folder (``concepts.hf_model``)."""

    name = "hf"

    def __init__(
        self, cfg: ConceptsConfig, cache_path: Path | None, *, max_new_tokens: int = 256, device: str = "auto"
    ) -> None:
        super().__init__(cfg, cache_path)
        if not cfg.hf_model:
            raise ConfigError("concepts.source=hf needs concepts.hf_model (a local causal LM folder)")
        self.path = Path(cfg.hf_model).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise ConfigError(
                f"concepts.hf_model={cfg.hf_model!r} is not a Hugging Face model folder "
                "(no config.json): point it at a saved causal LM"
            )
        self.identity = model_identity(self.path)
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._model: Any = None
        self._tok: Any = None

    def request_fields(self, label: str) -> dict[str, Any]:
        return {
            "hf_model": self.identity,
            "messages": self.messages(label),
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens,
        }

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("loading expert LM %s on %s", self.path, device)
        self._tok = AutoTokenizer.from_pretrained(str(self.path))
        self._model = AutoModelForCausalLM.from_pretrained(str(self.path)).to(device).eval()

    def generate(self, messages: list[dict[str, str]]) -> str:
        """The model's greedy answer to a chat; plain text prompt when there is no chat template."""
        import torch

        self._load()
        tok = self._tok
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            prompt = "\n".join(m["content"] for m in messages) + "\n"
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(self._model.device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            out = self._model.generate(
                **enc, do_sample=False, max_new_tokens=self.max_new_tokens, pad_token_id=pad
            )
        return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def ask(self, label: str, messages: list[dict[str, str]]) -> tuple[list[str], str]:
        text = self.generate(messages)
        concepts, problem = self.check_answer(text)
        if concepts is None:  # greedy: asking again gives the same answer, so no retry
            raise ExpertError(
                f"the local expert {self.path} answered with {problem} for label {label!r}: use a "
                "chat-tuned model, reword concepts.prompt, or lower concepts.min_concepts"
            )
        return concepts, text
