"""The one way to build a concept source: ``make_source(cfg, cache_path)``, one branch per name in ``SOURCES``.

The concrete sources are imported only when chosen, so building the ``file`` source costs
neither torch nor an HTTP client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from selfsynth.errors import ConfigError, DataError
from selfsynth.experts.names import SOURCES

if TYPE_CHECKING:
    from selfsynth.config import ConceptsConfig
    from selfsynth.experts.base import ConceptSource

__all__ = ["SOURCES", "make_source"]


def make_source(cfg: ConceptsConfig, cache_path: Path | None, default_path: str = "") -> ConceptSource:
    """The source that ``cfg.source`` names; ``default_path`` is the dataset's own bank for ``file``.

    ``cache_path`` is the SQLite answer cache of the LLM-backed sources (None: no cache).
    """
    if cfg.source == "file":
        from selfsynth.experts.file_source import FileSource

        path = cfg.path or default_path
        if not path:
            raise ConfigError(
                "concepts.source=file needs concepts.path (a concept JSON file) for this dataset"
            )
        if not Path(path).is_file():
            raise DataError(
                "concept file not found: set concepts.path to an existing JSON file", file=str(path)
            )
        return FileSource(path)
    if cfg.source == "openai":
        from selfsynth.experts.openai_source import OpenAISource

        return OpenAISource(cfg, cache_path)
    if cfg.source == "hf":
        from selfsynth.experts.hf_source import HFSource

        return HFSource(cfg, cache_path)
    raise ConfigError(f"concepts.source={cfg.source!r} is not one of {', '.join(SOURCES)}")
