"""Read part values stated in free text: the inverse of the world's concept and caption wordings.

Used to score whether a model's description states correct part values, and which concept
phrases it cites. The reader is deliberately simple and predictable: text is normalised
(lower case, hyphens and intensifiers dropped, "wing bars" and "eye ring" joined into one word),
a few multi-word patterns are matched first (wing bars, "no eye ring or mask", "dark streaks on
the breast"), then every value word is tied to a part noun either in front of it ("red crown",
"red-crowned") or behind a copula ("its crown is red", "crown: red"). A value word with no part
noun is not read: "a red bird" states nothing about any part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from selfsynth.data.world.phrases import (
    ANCHORS,
    COLOUR_WORDS,
    COUNT_WORDS,
    FACE_FORMS,
    PARTS,
    SHAPE_WORDS,
)

_COLOUR_PARTS = ("crown_colour", "wing_colour", "beak_colour", "leg_colour")
_DROP = {
    "a", "an", "the", "its", "their", "his", "her", "this", "very", "quite", "bright", "brightly",
    "vivid", "vividly", "bold", "boldly", "deep", "deeply", "strongly", "slightly", "distinct",
    "distinctive", "prominent", "clear", "clearly", "conspicuous", "striking", "strikingly", "rich",
    "richly", "neat", "neatly", "rather", "fairly", "somewhat", "pure", "solid", "vibrant",
    "brilliant", "heavily", "finely", "sharply", "lightly", "pale", "light", "warm", "dull",
}  # fmt: skip
_COPULAS = {"is", "are", "was", "were", "looks", "look", "appears", "appear", "seems", "seem", "which",
            "that", "being", "colored", "coloured", "of", "in"}  # fmt: skip
_FILLERS = {"short", "long", "stout", "thick", "heavy", "compact", "sturdy", "fine", "shaped", "tipped",
            "off", "down", "toned", "strong", "powerful", "sharp", "broad", "narrow", "needle", "cross",
            "colored", "coloured"}  # fmt: skip
_MAX_GAP = 4

_COLOUR_ALT = "|".join(w for ws in COLOUR_WORDS.values() for w in ws)
_ONE = "|".join(COUNT_WORDS["one"]) + "|a|an"
_TWO = "|".join(COUNT_WORDS["two"]) + r"|pair of|a pair of"
_BAR_COLOURS = {w: c for c in ("white", "yellow") for w in COLOUR_WORDS[c]}
_BAR_COL = "|".join(_BAR_COLOURS)
_MARKS = {"streaks": "streaked", "stripes": "streaked", "spots": "spotted", "speckles": "spotted",
          "dots": "spotted", "bars": "barred", "barring": "barred"}  # fmt: skip
_MARK_ALT = "|".join(_MARKS)
_MARK_ADJ = r"(?:(?:dark|black|brown|fine|thick|heavy|small|many|blackish|brownish)\s+)*"
_BREAST = r"(?:breast|chest|underparts|belly)"

# (regex, part, value or a function of the match) applied in order on the normalised text.
_PATTERNS: list[tuple[re.Pattern[str], str, object]] = [
    (re.compile(rf"\b{_BREAST}\s+(?:with|has|have|shows|showing|covered in|marked with)\s+{_MARK_ADJ}({_MARK_ALT})\b"),
     "breast_pattern", lambda m: _MARKS[m.group(1)]),
    (re.compile(rf"\b{_MARK_ADJ}({_MARK_ALT})\s+(?:on|across|covering|over)\s+(?:the\s+|its\s+)?{_BREAST}\b"),
     "breast_pattern", lambda m: _MARKS[m.group(1)]),
    (re.compile(r"\b(?:no|without|lacks?|lacking|lack of)\s+(?:any\s+)?(?:wingbars?|bars?)\b"), "wing_bars", "none"),
    (re.compile(rf"\b(?:unbarred|plain)\s+(?:(?:{_COLOUR_ALT})\s+)?wings?\b"), "wing_bars", "none"),
    (re.compile(r"\bwingbars?\s+(?:is|are)\s+absent\b"), "wing_bars", "none"),
    (re.compile(rf"\b(?:({_TWO})|({_ONE}))?\s*(?:(?:thin|narrow|broad|wide|crisp)\s+)?({_BAR_COL})\s+(wingbars?|bars?)\b"),
     "wing_bars", lambda m: _bar_value(m.group(1), m.group(2), m.group(3), m.group(4))),
    (re.compile(rf"\b(wingbars?)\s+(?:is|are)\s+({_BAR_COL})\b"),
     "wing_bars", lambda m: _bar_value(None, None, m.group(2), m.group(1))),
    (re.compile(r"\b(?:no|without|lacks?)\s+(?:eyering|mask)s?\s+(?:or|nor|and)\s+(?:no\s+)?(?:eyering|mask)s?\b"),
     "face", "plain"),
    (re.compile(r"\bneither\s+(?:an?\s+)?(?:eyering|mask)\s+nor\s+(?:an?\s+)?(?:eyering|mask)\b"), "face", "plain"),
]  # fmt: skip


def _bar_value(two: str | None, one: str | None, colour: str, noun: str) -> str:
    count = "two" if two else "one" if one else ("two" if noun.endswith("s") else "one")
    return f"{count} {_BAR_COLOURS[colour]}"


def _build_tables() -> tuple[dict[str, list[tuple[str, str]]], dict[tuple[str, str], frozenset[str]]]:
    """word -> [(part, value)] it can state, and (part, value) -> the nouns it must attach to."""
    words: dict[str, list[tuple[str, str]]] = {}
    anchors: dict[tuple[str, str], frozenset[str]] = {}

    def add(word: str, part: str, value: str, nouns: Iterable[str]) -> None:
        words.setdefault(word, []).append((part, value))
        anchors[(part, value)] = frozenset(nouns)

    for part in _COLOUR_PARTS:
        for value in PARTS[part]:
            for w in COLOUR_WORDS[value]:
                add(w, part, value, ANCHORS[part])
    for part, table in SHAPE_WORDS.items():
        for value, ws in table.items():
            for w in ws:
                add(w, part, value, ANCHORS[part])
    for value, (ws, nouns) in FACE_FORMS.items():
        for w in ws:
            add(w, "face", value, nouns)
    return words, anchors


_WORDS, _VALUE_ANCHORS = _build_tables()
_ANCHOR_WORDS = {a for nouns in _VALUE_ANCHORS.values() for a in nouns}
_ALL_VALUE_WORDS = set(_WORDS)


def normalise(text: str) -> str:
    """Lower case, hyphens to spaces, punctuation to ``,``, compound part nouns joined."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"'s\b", "", t)
    t = t.replace("gray", "grey").replace("colour", "color")
    t = re.sub(r"[-_/]", " ", t)
    t = re.sub(r"\bwing\s+bar(s?)\b", r"wingbar\1", t)
    t = re.sub(r"\brings?\s+(?:around|round|circling)\s+(?:the\s+|its\s+)?eyes?\b", "eyering", t)
    t = re.sub(r"\beye\s*rings?\b", "eyering", t)
    t = re.sub(r"\beye\s+masks?\b", "mask", t)
    t = re.sub(r"\bmask\s+(?:through|across|over)\s+(?:the\s+|its\s+)?eyes?\b", "mask", t)
    t = t.replace(":", " is ")
    t = re.sub(r"[.,;!?()\[\]\"{}]", " , ", t)
    return " ".join(w for w in t.split() if w not in _DROP)


def _tie(tokens: list[str], result: dict[str, str]) -> None:
    """Tie value words to part nouns: ``<value> [fillers] <noun>`` then ``<noun> [is] <value>``."""
    used = [False] * len(tokens)
    for i, tok in enumerate(tokens):  # value before noun: "red crown", "short conical orange beak"
        if tok not in _WORDS:
            continue
        for j in range(i + 1, min(len(tokens), i + 2 + _MAX_GAP)):
            nxt = tokens[j]
            if nxt in _ANCHOR_WORDS:
                hit = [(p, v) for p, v in _WORDS[tok] if p not in result and nxt in _VALUE_ANCHORS[(p, v)]]
                if hit:
                    result[hit[0][0]] = hit[0][1]
                    used[i] = True
                    break
            elif nxt not in _ALL_VALUE_WORDS and nxt not in _FILLERS:
                break
    for a, noun in enumerate(tokens):  # noun before value: "its crown is red", "tail: forked"
        if noun not in _ANCHOR_WORDS:
            continue
        copula = False
        for k in range(a + 1, min(len(tokens), a + 7)):
            tok = tokens[k]
            if tok in _COPULAS:
                copula = True
            elif tok in _WORDS and not used[k]:
                hit = [(p, v) for p, v in _WORDS[tok] if p not in result and noun in _VALUE_ANCHORS[(p, v)]]
                if not hit:
                    break
                result[hit[0][0]] = hit[0][1]
                used[k] = True
            elif tok in _FILLERS or (tok == "and" and copula):
                continue
            else:
                break


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[tuple[str, str], ...]:
    t = normalise(text)
    result: dict[str, str] = {}
    for pattern, part, value in _PATTERNS:
        for m in pattern.finditer(t):
            if part not in result:
                result[part] = value(m) if callable(value) else value  # type: ignore[operator]
        t = pattern.sub(" , ", t)
    tokens = [w for w in t.split() if w not in ("a", "an")]
    _tie(tokens, result)
    return tuple((p, result[p]) for p in PARTS if p in result)


def parse_attributes(text: str) -> dict[str, str]:
    """Part values stated in ``text``, e.g. ``{"crown_colour": "red", "tail_shape": "forked"}``.

    The first statement of a part wins; parts the text does not state are absent.
    """
    return dict(_parse(text))


def phrase_attribute(phrase: str) -> tuple[str, str] | None:
    """The one ``(part, value)`` a concept phrase states, or None when it states none or several."""
    pairs = _parse(phrase)
    return pairs[0] if len(pairs) == 1 else None


def cited_concepts(text: str, phrases: Iterable[str]) -> list[str]:
    """The concept phrases (e.g. a species' concepts.json entry) whose part value ``text`` states.

    Matching is by parsed part value, so "a scarlet cap" cites "bright red crown".
    """
    stated = parse_attributes(text)
    out = []
    for phrase in phrases:
        pv = phrase_attribute(phrase)
        if pv is not None and stated.get(pv[0]) == pv[1]:
            out.append(phrase)
    return out


def concepts_to_attributes(phrases: Iterable[str]) -> dict[str, str]:
    """``{part: value}`` stated by a list of concept phrases (phrases that state nothing are skipped)."""
    out: dict[str, str] = {}
    for phrase in phrases:
        pv = phrase_attribute(phrase)
        if pv is not None:
            out.setdefault(*pv)
    return out


def fitting_species(visible: Mapping[str, str], species: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Labels whose attributes agree with every visible ``{part: value}`` (the true one included)."""
    return [label for label, attrs in species.items() if all(attrs.get(p) == v for p, v in visible.items())]


def species_fitting_concepts(phrases: Iterable[str], bank: Mapping[str, Iterable[str]]) -> list[str]:
    """Labels of a concept bank (``concepts.json``) whose concepts include every given phrase's value."""
    table = {label: concepts_to_attributes(cs) for label, cs in bank.items()}
    return fitting_species(concepts_to_attributes(phrases), table)
