"""Answer-level metrics: accuracy (substring and strict), per class, confusion, and the explanation metrics.

``answer_metrics`` is what the evaluate stage calls on its samples: it returns every per-round
number the report shows and marks each row with what it was scored on (``pred``, ``ee``, ``cs``,
``cited``...), so ``samples.jsonl`` explains each number. Formulas are in the docstrings here, in
``metrics_explain`` / ``metrics_grounding``, and in ``docs/metrics.md``. Kept free of model code:
the encoder, the fluency scorer and the judge are passed in, so unit tests pin each metric on
hand-made answers with test doubles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from selfsynth.text import first_class, label_in

NONE = "none"  # the confusion-matrix column for answers that name no class


def accuracy(answers: Sequence[str], labels: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """``acc_substring`` (paper / Finer rule) and ``acc_strict`` (first affirmative class mention).

    acc_substring = mean_i [normalize(label_i) is a substring of normalize(answer_i)]
    acc_strict    = mean_i [first non-negated class mention in answer_i == label_i]
    """
    n = len(answers)
    if n == 0:
        return {"acc_substring": 0.0, "acc_strict": 0.0, "n": 0}
    sub = sum(label_in(a, y) for a, y in zip(answers, labels, strict=True))
    strict = sum(first_class(a, classes) == y for a, y in zip(answers, labels, strict=True))
    return {"acc_substring": sub / n, "acc_strict": strict / n, "n": n}


def _classes(rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[str]:
    """The run's classes, plus any true label the list lacks (so every row has a confusion row)."""
    out = list(dict.fromkeys(labels))
    seen = set(out)
    for r in rows:
        if r["label"] not in seen:
            seen.add(r["label"])
            out.append(r["label"])
    return out


def per_class(rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{label: {n, acc_substring, acc_strict}}`` for classes with test rows; rows need ``pred``."""
    out: dict[str, dict[str, float]] = {}
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    for c in classes:
        mine = by_class.get(c)
        if mine:
            out[c] = {
                "n": len(mine),
                "acc_substring": sum(label_in(r.get("answer") or "", c) for r in mine) / len(mine),
                "acc_strict": sum(r["pred"] == c for r in mine) / len(mine),
            }
    return out


def confusion(rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """True label x strict prediction; ``counts[i][j]`` = rows of ``labels[i]`` predicted ``columns[j]``.

    ``columns`` is ``labels`` plus ``"none"`` (no affirmative class mention).
    """
    index = {c: i for i, c in enumerate(classes)}
    counts = [[0] * (len(classes) + 1) for _ in classes]
    for r in rows:
        j = index.get(r["pred"], len(classes)) if r["pred"] is not None else len(classes)
        counts[index[r["label"]]][j] += 1
    return {"labels": list(classes), "columns": [*classes, NONE], "counts": counts}


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def answer_metrics(
    rows: list[dict[str, Any]],
    *,
    labels: Sequence[str],
    bank: Mapping[str, Sequence[str]],
    encoder: Any = None,
    fluency: Any = None,
    grounding: bool,
    judge: Any = None,
    citer: Any = None,
) -> dict[str, Any]:
    """Every per-round answer metric; adds per-row fields to ``rows`` in place.

    Rows need ``answer`` and ``label`` (``visible_concepts`` for grounding). Returns
    ``acc_substring``, ``acc_strict``, ``n``, ``per_class``, ``confusion``, ``ee``; with a
    non-empty ``bank``, ``cited_per_answer``; with ``encoder`` (``.encode(texts)`` -> unit
    vectors) ``cs`` and ``cs_explained``; with ``fluency`` (``.perplexity(texts)``) ``fs``; with
    ``grounding`` the ``ground_*`` / ``halluc_*`` numbers and ``grounded_rate``; with ``judge`` ``ee_judge`` and
    ``cs_judge``. ``citer(text, phrases) -> cited phrases`` overrides the concept matcher
    (default: word overlap, ``grounding.cite_phrases``; a dataset may offer its own).

    Row fields: ``pred``, ``correct_substring``, ``correct_strict``, ``ee``, and as available
    ``cs``, ``ppl``, ``cited``, ``cited_visible``, ``hallucinated``, ``precision``, ``recall``,
    ``grounded``, ``ee_judge``, ``cs_judge``.

    FS = exp(mean_i log ppl_i), the geometric mean of per-answer perplexities (lower is better;
    robust to one degenerate answer, unlike the arithmetic mean).
    """
    from selfsynth.metrics.explain import cognition_scores, explanation_flags
    from selfsynth.metrics.grounding import grounding as ground

    classes = _classes(rows, labels)
    answers = [r.get("answer") or "" for r in rows]
    truth = [r["label"] for r in rows]
    for r, a in zip(rows, answers, strict=True):
        r["pred"] = first_class(a, classes)
        r["correct_substring"] = label_in(a, r["label"])
        r["correct_strict"] = r["pred"] == r["label"]
    # Same numbers as ``accuracy``, from the row fields: the strict parser runs once per answer.
    n = len(rows)
    out: dict[str, Any] = {
        "acc_substring": sum(r["correct_substring"] for r in rows) / n if n else 0.0,
        "acc_strict": sum(r["correct_strict"] for r in rows) / n if n else 0.0,
        "n": n,
    }
    out["per_class"] = per_class(rows, classes)
    out["confusion"] = confusion(rows, classes)

    ee = explanation_flags(answers, classes, bank, encoder)
    for r, e in zip(rows, ee, strict=True):
        r["ee"] = e
    out["ee"] = _mean(ee) if rows else None

    if encoder is not None and rows:
        cs = cognition_scores(answers, truth, classes, bank, encoder)
        for r, s in zip(rows, cs, strict=True):
            r["cs"] = s
        out["cs"] = _mean(cs)
        out["cs_explained"] = _mean([s for s, e in zip(cs, ee, strict=True) if e])

    if fluency is not None and rows:
        ppl = fluency.perplexity(answers)
        ok = [p if p is not None and math.isfinite(p) and p > 0 else None for p in ppl]
        for r, p in zip(rows, ok, strict=True):
            r["ppl"] = p
        logs = [math.log(p) for p in ok if p is not None]
        out["fs"] = math.exp(sum(logs) / len(logs)) if logs else None

    if bank and rows:
        g = ground(rows, bank, citer=citer, with_visibility=grounding)
        if g:
            out.update(g)
        else:
            out["cited_per_answer"] = sum(len(r["cited"]) for r in rows) / len(rows)

    if judge is not None and rows:
        verdicts = judge.score(rows, bank)
        for r, v in zip(rows, verdicts, strict=True):
            r["ee_judge"] = v.get("ee")
            r["cs_judge"] = v.get("cs")
        out["ee_judge"] = _mean([v.get("ee") for v in verdicts])
        out["cs_judge"] = _mean([v.get("cs") for v in verdicts])
    return out
