"""selfsynth: fine-grained recognition with grounded explanations by self-synthesized data.

Importing the package registers the embedded model's custom vision tower with transformers
(lazily, only when transformers is importable), so a merged checkpoint loads with plain
``AutoModelForImageTextToText.from_pretrained(dir)`` after ``import selfsynth``.
"""

from __future__ import annotations

import contextlib

__version__ = "0.1.0"


def _register_models() -> None:
    with contextlib.suppress(ImportError):  # transformers missing: nothing to register
        from selfsynth.models import tower  # noqa: F401  (registration side effect)


_register_models()
