"""The world's vocabulary in one import: parts and values, their wordings, and the text reader.

``PARTS`` maps each part to its possible values; ``concept_phrase`` / ``noun_phrase`` /
``clause_phrase`` / ``compound_phrase`` word a value; ``parse_attributes`` reads values stated in
free text and ``cited_concepts`` says which concept phrases a text cites; ``fitting_species``
tells which species agree with a set of visible part values.
"""

from __future__ import annotations

from selfsynth.data.world.parse import (
    cited_concepts,
    concepts_to_attributes,
    fitting_species,
    normalise,
    parse_attributes,
    phrase_attribute,
    species_fitting_concepts,
)
from selfsynth.data.world.phrases import (
    ANCHORS,
    COLOUR_SURFACES,
    PART_NOUNS,
    PARTS,
    SHAPE_SURFACES,
    clause_phrase,
    compound_phrase,
    concept_phrase,
    noun_phrase,
    species_concepts,
)

__all__ = [
    "ANCHORS",
    "COLOUR_SURFACES",
    "PARTS",
    "PART_NOUNS",
    "SHAPE_SURFACES",
    "cited_concepts",
    "clause_phrase",
    "compound_phrase",
    "concept_phrase",
    "concepts_to_attributes",
    "fitting_species",
    "normalise",
    "noun_phrase",
    "parse_attributes",
    "phrase_attribute",
    "species_concepts",
    "species_fitting_concepts",
]
