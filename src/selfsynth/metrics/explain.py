"""Explanation metrics: EE (does the answer give a visual reason?) and CS (does it match the true class?).

The paper names both but never released their code, so the rules are written out here and in
``docs/metrics.md``; both ignore class names, so naming the class (right or wrong) earns nothing.

**EE** (explanation existence) of one answer is 1 when, after removing every class-name mention
and every stop/template word ("this is an image of a ..."), a content word remains that is a
visual cue: a word of any class's concept phrases (word overlap, plurals and grey/gray folded) or
a word of the colour/shape/size/pattern/part list ``CUE_WORDS``. With a text encoder a clause that
has content words but no such word also counts when its cosine to some concept phrase of any class
reaches ``EE_SIM``. "This is an image of X." gives 0.

**CS** (cognition score) of one answer: split it into clauses, remove class names, keep clauses
with content words; for each clause take the highest cosine to the TRUE class's concepts, clipped
to [0, 1]; CS is the mean over clauses, and 0 when no clause is left (no explanation, no
agreement). The run's CS is the mean over answers; ``cs_explained`` averages only answers with EE=1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from selfsynth.metrics.words import CUE_STEMS, clauses, concept_vocabulary, content_words, strip_labels

# Cosine from which a clause "is about" a concept. MiniLM gives unrelated text 0.1-0.25 and paraphrases
# 0.45-0.93; 0.6 stays clear of the unrelated range (the word route catches most paraphrases anyway).
EE_SIM = 0.6


def reason_clauses(answer: str, labels: Sequence[str]) -> list[str]:
    """The answer's clauses with class names removed, keeping those that still carry a content word."""
    out = []
    for c in clauses(answer):
        rest = strip_labels(c, labels)
        if content_words(rest):
            out.append(rest)
    return out


def lexical_reason(answer: str, labels: Sequence[str], vocab: frozenset[str]) -> bool:
    """The word-overlap half of EE: a cue word or concept word survives class-name removal."""
    return any(w in CUE_STEMS or w in vocab for w in content_words(strip_labels(answer, labels)))


def explanation_flags(
    answers: Sequence[str],
    labels: Sequence[str],
    bank: Mapping[str, Sequence[str]],
    encoder: Any = None,
    threshold: float = EE_SIM,
) -> list[int]:
    """EE per answer (0 or 1), by the rule in the module docstring."""
    vocab = concept_vocabulary(p for phrases in bank.values() for p in phrases)
    flags = [int(lexical_reason(a, labels, vocab)) for a in answers]
    concepts = sorted({p for phrases in bank.values() for p in phrases})
    if encoder is None or not concepts:
        return flags
    pending = {i: reason_clauses(a, labels) for i, a in enumerate(answers) if not flags[i]}
    texts = sorted({c for cs in pending.values() for c in cs})
    if not texts:
        return flags
    sims = encoder.encode(texts) @ encoder.encode(concepts).T
    best = dict(zip(texts, sims.max(axis=1).tolist(), strict=True))
    for i, cs in pending.items():
        if any(best[c] >= threshold for c in cs):
            flags[i] = 1
    return flags


def cognition_scores(
    answers: Sequence[str],
    true_labels: Sequence[str],
    labels: Sequence[str],
    bank: Mapping[str, Sequence[str]],
    encoder: Any,
) -> list[float | None]:
    """CS per answer in [0, 1]; None where the true class has no concepts in ``bank``."""
    per_answer = [reason_clauses(a, labels) for a in answers]
    texts = sorted({c for cs in per_answer for c in cs})
    vec = dict(zip(texts, encoder.encode(texts), strict=True)) if texts else {}
    class_vecs: dict[str, np.ndarray] = {}
    out: list[float | None] = []
    for cs, y in zip(per_answer, true_labels, strict=True):
        concepts = list(bank.get(y, ()))
        if not concepts:
            out.append(None)
            continue
        if y not in class_vecs:
            class_vecs[y] = encoder.encode(concepts)
        if not cs:
            out.append(0.0)
            continue
        sims = np.stack([vec[c] for c in cs]) @ class_vecs[y].T
        out.append(float(np.clip(sims.max(axis=1), 0.0, 1.0).mean()))
    return out
