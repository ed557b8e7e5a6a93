"""The ``file`` concept source: a concept bank JSON already on disk, no model asked."""

from __future__ import annotations

import logging
from pathlib import Path

from selfsynth.experts.base import ConceptSource

log = logging.getLogger(__name__)


class FileSource(ConceptSource):
    """A concept bank JSON, ``{label: [...]}`` or the paper's ``{"1": {"name", "visual_features"}}``.

    Labels absent from the file are left out of the result (and logged); the caller validates
    the bank against the dataset so that every problem is reported at once.
    """

    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def concepts(self, labels: list[str], progress: bool = False) -> dict[str, list[str]]:
        from selfsynth.data.concept_bank import load_concept_bank

        bank = load_concept_bank(self.path)
        missing = [lab for lab in labels if lab not in bank]
        if missing:
            log.warning(
                "%s has no concepts for %d label(s): %s", self.path, len(missing), ", ".join(missing[:10])
            )
        return {lab: list(bank[lab]) for lab in labels if lab in bank}
