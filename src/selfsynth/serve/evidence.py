"""Cited-concept evidence for an answer: which expert concepts it names, and where, for highlighting.

The terminal chat, the HTTP server and the web page all show the same evidence, so it is computed
here once. A concept phrase counts as cited by the same word-overlap rule the grounding metric
uses (``selfsynth.metrics.grounding.cite_phrases``: every content word of the phrase in one clause
of the answer, plurals and grey/gray folded, case ignored), so what a user sees highlighted is what
the evaluation counts. A class label counts when its words appear in order. The answer is also cut
into ``segments`` (text, concept or None) so a client can highlight without character offsets
(Python and JavaScript count string positions differently).

Where the concepts come from (``locate_concepts``): ``--concepts FILE``, else the model
directory's ``selfsynth.json`` (``{"concepts": "path" | {label: [phrases]}}``), else a
``concepts.json`` in the model directory, else the run or demo folder above it
(``concepts/concepts.json`` or ``world/concepts.json``, up to four levels up: a merged model
lives in ``runs/NAME/round_R/finetune/merged``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsynth.data.concept_bank import ConceptBank, load_concept_bank, parse_concept_bank
from selfsynth.errors import DataError
from selfsynth.io import read_json
from selfsynth.metrics.grounding import cite_phrases
from selfsynth.metrics.words import clauses, content_words, stem
from selfsynth.text import normalize

log = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_JOINER = re.compile(r"[\s\-]*")  # what may sit between two words of one highlighted span
_ANCESTOR_LEVELS = 4


@dataclass
class Evidence:
    """The concepts an answer cites, in order of first appearance, and the answer cut for highlighting."""

    cited: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # cited -> "label" | "concept"
    labels: dict[str, list[str]] = field(default_factory=dict)  # cited -> classes it belongs to
    segments: list[tuple[str, str | None]] = field(default_factory=list)

    def detail(self) -> list[dict[str, Any]]:
        """One JSON object per cited concept: the phrase, its kind and the classes that list it."""
        return [{"concept": c, "kind": self.kinds[c], "labels": self.labels[c]} for c in self.cited]

    def segments_json(self) -> list[dict[str, str | None]]:
        return [{"text": t, "concept": c} for t, c in self.segments]


class EvidenceFinder:
    """Finds cited concepts of one concept bank in answers; the bank's words are prepared once."""

    def __init__(self, bank: Mapping[str, Sequence[str]] | None) -> None:
        self.bank: dict[str, list[str]] = {k: list(v) for k, v in (bank or {}).items()}
        self.phrases = list(dict.fromkeys(p for ps in self.bank.values() for p in ps))
        self._owners: dict[str, list[str]] = {}
        for label, phrases in self.bank.items():
            for p in phrases:
                self._owners.setdefault(p, []).append(label)
        self._words = {p: frozenset(content_words(p)) for p in self.phrases}
        self._label_words = {lab: normalize(lab).split() for lab in self.bank if normalize(lab)}

    def __bool__(self) -> bool:
        return bool(self.bank)

    def __call__(self, answer: str) -> Evidence:
        answer = answer or ""
        if not self.bank:
            return Evidence(segments=[(answer, None)] if answer else [])
        tokens = [(m.start(), m.end(), normalize(m.group())) for m in _WORD.finditer(answer)]
        owner: list[str | None] = [None] * len(tokens)
        kinds: dict[str, str] = {}
        labels: dict[str, list[str]] = {}
        # Labels first: a class name is the strongest evidence and wins a shared word.
        for label, words in self._label_words.items():
            for i in _find_sequence([t[2] for t in tokens], words):
                for j in range(i, i + len(words)):
                    owner[j] = owner[j] or label
                kinds[label], labels[label] = "label", [label]
        for phrase in cite_phrases(answer, self.phrases):
            words = self._words[phrase]
            split_and = " and " not in f" {normalize(phrase)} "
            for start, end in _clause_spans(answer, split_and):
                inside = [j for j, t in enumerate(tokens) if start <= t[0] and t[1] <= end]
                if not words <= {_key(tokens[j][2]) for j in inside}:
                    continue
                for j in inside:
                    if owner[j] is None and _key(tokens[j][2]) in words:
                        owner[j] = phrase
            kinds.setdefault(phrase, "concept")
            labels.setdefault(phrase, list(self._owners.get(phrase, [])))
        first = {c: i for i, c in reversed(list(enumerate(owner))) if c is not None}
        cited = sorted(kinds, key=lambda c: (first.get(c, len(tokens)), c))
        return Evidence(cited, kinds, labels, _segments(answer, tokens, owner))


def _key(word: str) -> str:
    return stem(word.strip("'"))


def _find_sequence(words: list[str], target: list[str]) -> list[int]:
    n = len(target)
    return [i for i in range(len(words) - n + 1) if words[i : i + n] == target] if n else []


def _clause_spans(text: str, split_and: bool) -> list[tuple[int, int]]:
    """Character spans of the clauses ``metrics_words.clauses`` cuts (they are substrings, in order)."""
    out, pos = [], 0
    for c in clauses(text, split_and=split_and):
        i = text.find(c, pos)
        if i < 0:
            continue
        out.append((i, i + len(c)))
        pos = i + len(c)
    return out


def _segments(
    text: str, tokens: list[tuple[int, int, str]], owner: list[str | None]
) -> list[tuple[str, str | None]]:
    """Cut ``text`` into plain and highlighted runs; neighbouring words of one concept form one run."""
    spans: list[list[Any]] = []
    for (s, e, _), c in zip(tokens, owner, strict=True):
        if c is None:
            continue
        if spans and spans[-1][2] == c and _JOINER.fullmatch(text[spans[-1][1] : s]):
            spans[-1][1] = e
        else:
            spans.append([s, e, c])
    out: list[tuple[str, str | None]] = []
    pos = 0
    for s, e, c in spans:
        if s > pos:
            out.append((text[pos:s], None))
        out.append((text[s:e], c))
        pos = e
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def locate_concepts(
    model_dir: str | Path | None, explicit: str | Path | None = None
) -> tuple[ConceptBank, str]:
    """The concept bank to highlight with and where it came from; ``({}, "")`` when there is none.

    An explicit file must exist and parse (a DataError names it otherwise); discovered files are
    only used when they parse, with a warning when one does not.
    """
    if explicit:
        return load_concept_bank(explicit), str(explicit)
    if model_dir is None:
        return {}, ""
    root = Path(model_dir)
    meta = root / "selfsynth.json"
    if meta.is_file():
        data = read_json(meta)
        ref = data.get("concepts") if isinstance(data, dict) else None
        if isinstance(ref, dict):
            return parse_concept_bank(ref, f"{meta} (concepts)"), str(meta)
        if isinstance(ref, str):
            path = (root / ref) if not Path(ref).is_absolute() else Path(ref)
            return load_concept_bank(path), str(path)
        if ref is not None:
            raise DataError("'concepts' must be a file path or a {label: [phrases]} object", file=str(meta))
    candidates = [root / "concepts.json"]
    for d in [root, *root.resolve().parents][: _ANCESTOR_LEVELS + 1]:
        candidates += [d / "concepts" / "concepts.json", d / "world" / "concepts.json"]
    for path in candidates:
        if path.is_file():
            try:
                return load_concept_bank(path), str(path)
            except DataError as e:
                log.warning("ignoring concept file %s: %s", path, e)
    return {}, ""
