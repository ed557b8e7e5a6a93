"""Test doubles for the metric tests: a bag-of-words "encoder" whose cosine is word overlap."""

from __future__ import annotations

import hashlib

import numpy as np

from selfsynth.metrics.words import content_words


class BagEncoder:
    """Unit vectors of hashed content words: cos(a, b) = shared words / sqrt(|a| |b|)."""

    def __init__(self, dim: int = 4096) -> None:
        self.dim = dim
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in set(content_words(t)):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] = 1.0
            n = np.linalg.norm(out[i])
            if n:
                out[i] /= n
        return out


class FixedFluency:
    """``perplexity`` from a dict; unknown texts get 100."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def perplexity(self, texts: list[str]) -> list[float]:
        return [self.table.get(t, 100.0) for t in texts]
