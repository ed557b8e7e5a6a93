"""Concept grounding: which expert concepts an answer cites, and whether they are visible in its image.

Only a dataset that records which concepts each test image shows (``visible_concepts``; the
embedded world does) lets an explanation be checked against the image. Definitions (micro-averaged over the
answers that carry ``visible_concepts``; per answer too):

- cited C_i: the concept phrases of ANY class that answer i cites; V_i: the image's visible ones
- precision = sum |C_i & V_i| / sum |C_i|,  recall = sum |C_i & V_i| / sum |V_i|
- hallucination rate = sum |C_i - V_i| / sum |C_i| (cited but not visible in this image,
  including concepts of another class); ``halluc_other_rate`` counts only the cited concepts
  that are not in the true class's bank at all. A ratio whose denominator is 0 (nothing cited
  anywhere, e.g. a label-only model) is None, shown as "-": undefined, not perfect or zero.
- grounded rate = share of answers that cite at least ``GROUNDED_MIN_CITED`` concepts, every one
  of them visible. EE is 1 for any model that explains at all; this rate keeps moving while
  answers trade a hallucinated cue for a visible one, and a label-only answer scores 0.

A dataset may bring its own citer (``data.registry.Capabilities.citer``: the world's parses its
part/value grammar, so synonyms such as "scarlet cap" count); the default is ``cite_phrases`` below.
It compares content words (plurals and grey/gray, bill/beak folded; hedges such as "typically"
dropped): a phrase of up to three content words is cited when all of them occur in one clause of
the answer (clauses end at punctuation and at "and", "with", "but"...; "and" is kept when the
phrase has one, as in "black and white"); a longer phrase, when all its words but one occur in
one sentence ("large, hooked bill, typically dark gray" is cited by "the bill is large and
hooked, dark grey"; the price: "dark wings, white belly" also cites "white belly with dark
streaks"); a cited phrase whose words are a strict subset of another cited phrase's is
dropped ("red crown" inside "bright red crown").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from selfsynth.metrics.words import clauses, content_words, sentences
from selfsynth.text import normalize

log = logging.getLogger(__name__)

Citer = Callable[[str, list[str]], list[str]]
# One visible concept can be a lucky guess at the most common part value; two are evidence.
GROUNDED_MIN_CITED = 2


@functools.lru_cache(maxsize=1 << 16)
def _phrase_words(phrase: str) -> tuple[frozenset[str], bool]:
    """A bank phrase's content words and whether it joins words with "and" (cached: banks repeat)."""
    return frozenset(content_words(phrase)), " and " in f" {normalize(phrase)} "


def cite_phrases(text: str, phrases: Sequence[str]) -> list[str]:
    """The phrases ``text`` cites, in bank order (word-overlap matcher; see the module docstring)."""
    fine = [set(content_words(c)) for c in clauses(text)]
    coarse = [set(content_words(c)) for c in clauses(text, split_and=False)]
    whole = [set(content_words(s)) for s in sentences(text)]
    hits: list[tuple[str, frozenset[str]]] = []
    for p in dict.fromkeys(phrases):
        words, has_and = _phrase_words(p)
        if not words:
            continue
        if len(words) <= 3:
            pool = coarse if has_and else fine
            cited = any(words <= c for c in pool)
        else:
            need = len(words) - 1
            cited = any(len(words & s) >= need for s in whole)
        if cited:
            hits.append((p, words))
    return [p for p, w in hits if not any(w < other for _, other in hits)]


def _key(phrase: str) -> str:
    return normalize(phrase)


def is_grounded(cited: Sequence[str], visible: Sequence[str]) -> bool:
    """At least ``GROUNDED_MIN_CITED`` distinct concepts cited, and every cited one is visible."""
    keys = {_key(c) for c in cited}
    return len(keys) >= GROUNDED_MIN_CITED and keys <= {_key(v) for v in visible}


def grounded_rate(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """``grounded_rate`` of evaluated rows that already carry ``cited`` (``samples.jsonl`` of any run).

    Rows without a ``visible_concepts`` list are left out; None when no row has both fields
    (a dataset without visibility, or samples written before citations were recorded).
    """
    flags = [
        is_grounded(r["cited"], r["visible_concepts"])
        for r in rows
        if isinstance(r.get("cited"), list) and isinstance(r.get("visible_concepts"), list)
    ]
    return sum(flags) / len(flags) if flags else None


def grounding(
    rows: list[dict[str, Any]],
    bank: Mapping[str, Sequence[str]],
    *,
    citer: Citer | None = None,
    with_visibility: bool = True,
) -> dict[str, Any]:
    """Add ``cited`` (and, where visibility is known, ``cited_visible``, ``hallucinated``,
    ``precision``, ``recall``, ``grounded``) to each row in place; return the micro/macro grounding metrics.

    Rows need ``answer`` and ``label``; ``visible_concepts`` (a list) enables the grounding
    numbers for that row. ``with_visibility=False`` only marks citations (datasets without
    per-image visible concepts). ``citer`` defaults to ``cite_phrases``.
    """
    citer = citer or cite_phrases
    phrases = list(dict.fromkeys(p for ps in bank.values() for p in ps))
    n_cited = n_hit = n_visible = n_other = n_rows = n_grounded = 0
    precisions: list[float] = []
    recalls: list[float] = []
    for r in rows:
        cited = citer(r.get("answer") or "", phrases)
        r["cited"] = cited
        visible = r.get("visible_concepts")
        if not with_visibility or not isinstance(visible, list):
            continue
        vis = {_key(v) for v in visible}
        own = {_key(p) for p in bank.get(r.get("label", ""), ())}
        hit = [c for c in cited if _key(c) in vis]
        miss = [c for c in cited if _key(c) not in vis]
        r["cited_visible"] = hit
        r["hallucinated"] = miss
        r["precision"] = len(hit) / len(cited) if cited else None
        r["recall"] = len(hit) / len(vis) if vis else None
        r["grounded"] = is_grounded(cited, visible)
        n_rows += 1
        n_grounded += r["grounded"]
        n_cited += len(cited)
        n_hit += len(hit)
        n_visible += len(vis)
        n_other += sum(_key(c) not in own for c in miss)
        if cited:
            precisions.append(len(hit) / len(cited))
        if vis:
            recalls.append(len(hit) / len(vis))
    if not n_rows:
        return {}
    return {
        "ground_n": n_rows,
        "ground_precision": n_hit / n_cited if n_cited else None,
        "ground_recall": n_hit / n_visible if n_visible else None,
        "halluc_rate": (n_cited - n_hit) / n_cited if n_cited else None,
        "halluc_other_rate": n_other / n_cited if n_cited else None,
        "ground_precision_macro": sum(precisions) / len(precisions) if precisions else None,
        "ground_recall_macro": sum(recalls) / len(recalls) if recalls else None,
        "cited_per_answer": n_cited / n_rows,
        "grounded_rate": n_grounded / n_rows,
    }
