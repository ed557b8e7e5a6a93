"""The embedded world: procedurally drawn birds of invented species, with per-image ground-truth concepts.

``make_world(out, ...)`` writes a world folder (see ``make.py`` for the files); ``vocab`` holds the
parts, their wordings and the text reader used to score descriptions.
"""

from __future__ import annotations

from selfsynth.data.world import vocab
from selfsynth.data.world.make import make_world, summary
from selfsynth.data.world.species import Species, make_species

__all__ = ["Species", "make_species", "make_world", "summary", "vocab"]
