"""The names of the concept sources, the one list of ``concepts.source`` values.

Kept free of imports so that the settings check can read it without importing the sources,
which themselves read the settings; :mod:`selfsynth.experts.factory` builds one per name.
"""

SOURCES: tuple[str, ...] = ("file", "openai", "hf")
