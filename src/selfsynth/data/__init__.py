"""Labelled image collections in many formats, read as ``Example`` records, plus concept banks.

``load_examples(cfg, "train")`` is the one call stages need; ``load_split`` also reports what
``skip_bad`` left out. Formats are listed by ``list_formats()``, and ``get_capabilities`` says
what a format offers beyond images; ``data/world/`` generates the embedded world, whose files
the ``world`` format reads.
"""

from __future__ import annotations

from selfsynth.data.checks import Skipped
from selfsynth.data.concept_bank import (
    ConceptBank,
    concept_bank_problems,
    load_concept_bank,
    save_concept_bank,
    validate_concept_bank,
)
from selfsynth.data.loaders import LoadReport, class_names, load_examples, load_split
from selfsynth.data.registry import (
    Capabilities,
    concept_bank_path,
    get_capabilities,
    get_loader,
    list_formats,
    register_format,
)

__all__ = [
    "Capabilities",
    "ConceptBank",
    "LoadReport",
    "Skipped",
    "class_names",
    "concept_bank_path",
    "concept_bank_problems",
    "get_capabilities",
    "get_loader",
    "list_formats",
    "load_concept_bank",
    "load_examples",
    "load_split",
    "register_format",
    "save_concept_bank",
    "validate_concept_bank",
]
