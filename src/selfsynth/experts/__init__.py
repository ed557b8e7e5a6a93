"""Expert concept sources: where each class's visual concepts come from (``make_source``, ``SOURCES``)."""

from selfsynth.experts.factory import make_source
from selfsynth.experts.names import SOURCES

__all__ = ["SOURCES", "make_source"]
