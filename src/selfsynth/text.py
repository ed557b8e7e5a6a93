"""Label matching in free text: the paper's substring rule, a strict first-mention parser, negations.

Accuracy in the paper (and the Finer benchmark) counts an answer correct when the normalised label
is a substring of the normalised answer. That rule is kept as ``label_in`` for comparability, but
it counts "no pneumonia" as "pneumonia" and "Arctic Tern" as "Tern", so we also report a strict
parser: the first class name the answer mentions (longest name wins where names overlap, negated
mentions are skipped) must be the true one. The synthesis filters use the strict notion too.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_NEGATORS = (
    "no",
    "not",
    "without",
    "never",
    "isn't",
    "isnt",
    "aren't",
    "arent",
    "wasn't",
    "wasnt",
    "nor",
    "non",
    "rule out",
    "ruled out",
    "rather than",
    "instead of",
    "unlike",
    "absence of",
    "negative for",
    "free of",
)
_NEG_WINDOW = 3  # words before a mention that may negate it ("not a melanoma", "no signs of pneumonia")
_NEG_FILLERS = {
    "a",
    "an",
    "the",
    "any",
    "signs",
    "sign",
    "of",
    "evidence",
    "obvious",
    "clear",
    "typical",
    "likely",
}


def normalize(text: str) -> str:
    """Lower-case, unicode-fold (NFKC, accents kept as letters), punctuation and underscores to spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def label_in(answer: str, label: str) -> bool:
    """The paper's rule: the normalised label is a substring of the normalised answer."""
    lab = normalize(label)
    return bool(lab) and lab in normalize(answer)


@dataclass(frozen=True)
class Mention:
    label: str
    start: int  # word index in the normalised answer
    negated: bool


def _is_negated(words: list[str], start: int) -> bool:
    """A mention is negated when a negator stands within a few words before it, fillers aside."""
    j = start - 1
    seen = 0
    while j >= 0 and seen < _NEG_WINDOW + 2:
        w = words[j]
        if w in _NEG_FILLERS:
            j -= 1
            continue
        two = f"{words[j - 1]} {w}" if j >= 1 else ""
        if w in _NEGATORS or two in _NEGATORS:
            return True
        seen += 1
        if seen >= _NEG_WINDOW:
            break
        j -= 1
    return False


@functools.lru_cache(maxsize=64)
def _names(labels: tuple[str, ...]) -> tuple[tuple[tuple[str, ...], str], ...]:
    """Normalised class names, longest first (cached: the same label list is matched many times)."""
    norm = {normalize(lab): lab for lab in labels if normalize(lab)}
    return tuple((tuple(k.split()), v) for k, v in sorted(norm.items(), key=lambda kv: -len(kv[0])))


def mentions(answer: str, labels: Sequence[str]) -> list[Mention]:
    """Every class-name mention in ``answer``, in order, on word boundaries.

    Where names overlap ("Arctic Tern" contains "Tern"), the longest name at a position wins and
    the shorter one inside it is not a mention of its own.
    """
    words = normalize(answer).split()
    names = sorted(
        {normalize(lab): lab for lab in labels if normalize(lab)}.items(), key=lambda kv: -len(kv[0])
    )
    taken = [False] * len(words)
    found: list[Mention] = []
    for norm, original in names:
        toks = norm.split()
        n = len(toks)
        for i in range(len(words) - n + 1):
            if words[i : i + n] == toks and not any(taken[i : i + n]):
                for t in range(i, i + n):
                    taken[t] = True
                found.append(Mention(original, i, _is_negated(words, i)))
    found.sort(key=lambda m: m.start)
    return found


def first_class(answer: str, labels: Sequence[str]) -> str | None:
    """The first class the answer names affirmatively, or None."""
    for m in mentions(answer, labels):
        if not m.negated:
            return m.label
    return None


def names_label(answer: str, label: str, labels: Sequence[str]) -> bool:
    """Strict: the first affirmative class mention is ``label``."""
    pool = list(labels) if label in labels else [*labels, label]
    return first_class(answer, pool) == label


def repeated_phrase(text: str, exclude: Sequence[str] = (), n: int = 3) -> bool:
    """True when ``text`` repeats itself: a run of ``n`` words twice, or a list item twice.

    "bright red bill, bright red bill and ..." repeats three words; "It has red bill, red bill
    and red bill" repeats the item "red bill" (items are split at punctuation and "and"; an item
    that ends an earlier one counts, so "It has red bill and red bill" does too). A small model
    that cites concepts from its prompt can fall into re-copying the first one, and its answers
    then teach the next round to repeat. Phrases in ``exclude`` (the label, which an explanation
    names twice by design) are taken out first.
    """
    pieces = [text]
    for phrase in exclude:
        if phrase:
            pieces = [p for piece in pieces for p in re.split(re.escape(phrase), piece, flags=re.IGNORECASE)]
    grams: set[tuple[str, ...]] = set()
    items: list[str] = []
    for piece in pieces:  # neither a run of words nor an item spans a taken-out phrase
        words = normalize(piece).split()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in grams:
                return True
            grams.add(gram)
        for chunk in re.split(r"[,.;:!?]|\band\b", piece):
            item = normalize(chunk)
            if len(item.split()) < 2:
                continue
            if any(old == item or old.endswith(" " + item) for old in items):
                return True
            items.append(item)
    return False


def drop_repeated_items(text: str) -> str:
    """``text`` with list items that repeat an earlier item taken out, the list's "and" kept.

    "It has red bill, red bill and black cap, which ..." -> "It has red bill and black cap,
    which ...". Items are split at commas and "and" within each sentence; an item counts as a
    repeat when it equals an earlier item or ends one ("It has red bill" ends with "red bill").
    For answers a model wrote itself that fell into re-copying a concept: what it claimed stays,
    the stutter goes.
    """
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        end = len(sentence.rstrip(".!?"))
        sentence, stop = sentence[:end], sentence[end:]
        parts = re.split(r"(,\s+|\s+and\s+)", sentence)
        items, seps = parts[0::2], ["", *parts[1::2]]
        kept: list[list[str]] = []  # [separator before, item]
        seen: list[str] = []
        for item, sep in zip(items, seps, strict=True):
            key = normalize(item)
            if kept and key and any(k == key or k.endswith(" " + key) for k in seen):
                if sep.strip() == "and" and len(kept) > 1 and kept[-1][0].strip() == ",":
                    kept[-1][0] = sep  # "A, B and B." -> "A and B."
                continue
            seen.append(key)
            kept.append([sep, item])
        out.append("".join(s + i for s, i in kept) + stop)
    return " ".join(out)


def without_repeats(text: str, label: str) -> str | None:
    """``drop_repeated_items(text)`` when that repeats no phrase (``label`` excepted), else None.

    The one repair that synthesis and sampling apply to an answer that still repeats itself;
    each caller then checks that the repaired answer still names its label.
    """
    fixed = drop_repeated_items(text)
    return None if repeated_phrase(fixed, (label,)) else fixed
