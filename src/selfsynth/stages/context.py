"""What every stage is handed: the settings, the run directory, the data, and lazily loaded models.

Stages never read argv or globals; they take a ``Context`` and write into their own folder.
Only one VLM is kept in memory at a time, because on a 7B model two copies do not fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsynth import distributed
from selfsynth.config import RunConfig
from selfsynth.models.backend import Backend, free_memory, load_backend
from selfsynth.prompts import PromptPools, pools_for
from selfsynth.records import Example

log = logging.getLogger(__name__)


@dataclass
class Context:
    cfg: RunConfig
    run_dir: Path
    train: list[Example]
    test: list[Example]
    labels: list[str]
    progress: bool = True
    skipped: list[dict[str, Any]] = field(default_factory=list)  # bad records data.skip_bad left out
    pools: PromptPools = field(init=False)
    _vlm: Any = field(default=None, init=False, repr=False)
    _vlm_path: str = field(default="", init=False, repr=False)
    _encoder: Any = field(default=None, init=False, repr=False)
    _fluency: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.pools = pools_for(self.cfg.data.kind)

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / "cache"

    def vlm(self, path: str | Path) -> Backend:
        """The model backend at ``path``, loading it (and dropping any other) on first use."""
        path = str(path)
        if self._vlm is not None and self._vlm_path == path:
            return self._vlm
        self.release_vlm()
        log.info("loading VLM from %s", path)
        self._vlm = load_backend(path, self.cfg.model, cache_dir=self.cache_dir / "features")
        self._vlm_path = path
        return self._vlm

    def release_vlm(self) -> None:
        if self._vlm is not None:
            close = getattr(self._vlm, "close", None)
            if callable(close):  # an engine holding worker processes (vLLM) frees them here, not at GC
                close()
            self._vlm = None
            self._vlm_path = ""
            free_memory()

    def citer(self):
        """The dataset's concept citer (the world parses its own wordings), else the word-overlap one."""
        from selfsynth.data.registry import get_capabilities
        from selfsynth.metrics.grounding import cite_phrases

        return get_capabilities(self.cfg.data).citer or cite_phrases

    def encoder(self):
        if self._encoder is None:
            from selfsynth.models.embed import TextEncoder

            e = self.cfg.embed
            self._encoder = TextEncoder(
                e.path,
                cache_dir=self.cache_dir / "embed" / distributed.cache_suffix(),
                batch_size=e.batch_size,
                max_length=e.max_length,
                prefix=e.prefix,
                precision=e.precision,
            )
        return self._encoder

    def fluency(self):
        if self._fluency is None:
            from selfsynth.metrics.fluency import FluencyScorer

            self._fluency = FluencyScorer(
                self.cfg.evaluate.fluency_model, cache_dir=self.cache_dir / "fluency"
            )
        return self._fluency
