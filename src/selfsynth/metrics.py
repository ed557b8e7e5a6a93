"""Answer-level metrics: accuracy by the paper's substring rule and by the strict first-mention rule.

Kept free of models so every metric can be pinned by unit tests on hand-made answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from selfsynth.text import first_class, label_in

_LETTER = re.compile(r"\b(?:answer is|answer:|option)\s*\(?([A-Z])\b|^\s*\(?([A-Z])[\.\):]?(?:\s|$)")


def accuracy(answers: Sequence[str], labels: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """``acc_substring`` (paper / Finer rule) and ``acc_strict`` (first affirmative class mention)."""
    n = len(answers)
    if n == 0:
        return {"acc_substring": 0.0, "acc_strict": 0.0, "n": 0}
    sub = sum(label_in(a, y) for a, y in zip(answers, labels, strict=True))
    strict = sum(first_class(a, classes) == y for a, y in zip(answers, labels, strict=True))
    return {"acc_substring": sub / n, "acc_strict": strict / n, "n": n}


def parse_letter(answer: str, letters: str = "ABCD") -> str | None:
    """The option letter a multiple-choice answer commits to, or None."""
    m = _LETTER.search(answer.strip())
    if m:
        letter = m.group(1) or m.group(2)
        if letter in letters:
            return letter
    return None
