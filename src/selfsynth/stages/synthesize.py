"""Stage ``synthesize`` (round 1): answers written by the base model when it is told the label and Z*.

The model sees the image plus "This is a picture of a {label} with the following visual features:
... Use this information to answer: {question}". Answers that do not name the label (strictly:
first affirmative class mention) are dropped. With ``samples`` > 1 the model writes several
answers per prompt and the first that names the label and (``avoid_repeats``) repeats no phrase
is kept; if it still repeats one, its repeated list items are dropped. A small base model that
cites the given concepts can fall into re-copying the first one ("bright red bill, bright red
bill and ..."), and every later round learns from its answers. ``prefer_cited`` (an extension)
ranks those answers by how many of the prompt's concepts they cite, less the concepts they cite
from outside them (``Context.citer``). With ``answers: rule`` (an extension) every explained
answer is instead the base model's own answer form filled in by rule (``prompts.cited_answer``): the label
and every concept of the prompt, as exact phrases; only the name-only prompts are then generated. The stored
training pair is (image, bare question) -> answer, so the tuned model must answer from the image
alone. Each prompt is built next to its own image (the reference paired prompts with the wrong
images inside a batch).

Baselines use the same stage: ``nl`` answers "This is an image of {label}." without generation;
``lge`` shows all of Z_c instead of the image's Z* (a class-level explanation).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from selfsynth.errors import SelfsynthError
from selfsynth.prompts import NOUNS, cited_answer, concept_prompt, label_answer
from selfsynth.records import QA, Example
from selfsynth.runs import Stage, chunk_seed, hashed_settings, stage_fp
from selfsynth.stages.context import Context
from selfsynth.stages.rs_score import zstar_counts
from selfsynth.text import names_label, repeated_phrase, without_repeats

log = logging.getLogger(__name__)
FALLBACKS = ("label", "drop")  # synthesize.fallback: what a prompt gets when no answer names the label
ANSWER_SOURCES = ("model", "rule")  # synthesize.answers: who writes the explained answers


def pick_answer(
    answers: Sequence[str],
    label: str,
    labels: Sequence[str],
    avoid_repeats: bool = True,
    grounded: Sequence[int] | None = None,
) -> tuple[str, bool, bool]:
    """(answer, names the label, was repaired): the first naming the label, preferring no repeats.

    With ``avoid_repeats``, an answer that still repeats a phrase loses its repeated list items
    (``text.without_repeats``) when what remains names the label and repeats nothing. With
    ``grounded`` (per answer: prompt concepts cited minus other concepts cited), the answer with
    the highest count wins among those equal on the first two criteria.
    """
    named = [names_label(a, label, labels) for a in answers]
    repeats = [avoid_repeats and repeated_phrase(a, (label,)) for a in answers]
    ground = list(grounded) if grounded is not None else [0] * len(answers)
    best = min(range(len(answers)), key=lambda j: (not named[j], repeats[j], -ground[j], j))
    answer = answers[best]
    fixed = without_repeats(answer, label) if repeats[best] else None
    if fixed is not None and names_label(fixed, label, labels) == named[best]:
        return fixed, named[best], True
    return answer, named[best], False


def run_synthesize(
    ctx: Context, model_path: str, selected: dict[str, list[str]], bank: dict[str, list[str]], *inputs_fp: str
) -> tuple[list[QA], str]:
    cfg = ctx.cfg.synthesize
    method = ctx.cfg.method
    settings = hashed_settings(cfg, {"prefer_cited": False, "answers": "model"})
    fp = stage_fp({**settings, "method": method, "seed": ctx.cfg.seed}, *inputs_fp)
    stage = Stage(ctx.run_dir, "round_1/synthesize", fp)
    done = stage.done()
    if not done:
        stage.begin()

    citer = ctx.citer() if cfg.prefer_cited else None
    noun = NOUNS[ctx.cfg.data.kind][0]
    phrases = list(dict.fromkeys(p for ps in bank.values() for p in ps))

    def work(c: int, chunk: Sequence[Example]) -> list[dict[str, Any]]:
        rng = random.Random(chunk_seed(ctx.cfg.seed, "synthesize", c))
        asks = [
            (e, kind, q)
            for e in chunk
            for kind, q in ctx.pools.draw(rng, cfg.questions, weights=cfg.pool_weights)
        ]
        if method == "nl":
            return [
                QA(f"{e.id}#{i}", e.image, q, label_answer(e.label), e.label, kind).to_dict()
                for i, (e, kind, q) in enumerate(asks)
            ]
        concepts = {e.id: (bank[e.label] if method == "lge" else selected[e.id]) for e in chunk}
        # With answers=rule only the name-only prompts need the model. Sampling streams are keyed by
        # (image, prompt), so leaving the others out changes none of the sampled answers.
        by_rule = [cfg.answers == "rule" and kind != "simple" and bool(concepts[e.id]) for e, kind, _ in asks]
        asked = [a for a, r in zip(asks, by_rule, strict=True) if not r]
        outs = iter(
            ctx.vlm(model_path).generate(
                [e.image for e, _, _ in asked],
                [concept_prompt(e.label, concepts[e.id], q) for e, _, q in asked],
                n=cfg.samples,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens,
                seed=chunk_seed(ctx.cfg.seed, "synthesize-gen", c),
                batch_size=cfg.batch_size,
                no_repeat_ngram=cfg.no_repeat_ngram,
                allow_repeats=ctx.labels,
            )
            if asked
            else []
        )
        rows = []
        for i, ((e, kind, q), rule) in enumerate(zip(asks, by_rule, strict=True)):
            if rule:
                answer, named, repaired = cited_answer(e.label, concepts[e.id], kind, noun), True, False
            else:
                texts = [t.strip() for t in next(outs)]
                grounded = None
                if cfg.prefer_cited:
                    inside, outside = zstar_counts(texts, concepts[e.id], phrases, citer)
                    grounded = [i - o for i, o in zip(inside, outside, strict=True)]
                answer, named, repaired = pick_answer(texts, e.label, ctx.labels, cfg.avoid_repeats, grounded)
            rows.append(
                {
                    **QA(f"{e.id}#{i}", e.image, q, answer, e.label, kind).to_dict(),
                    "keep": named,
                    "repaired": repaired,
                }
            )
        return rows

    rows = stage.chunks(
        ctx.train, ctx.cfg.chunk_size, work, desc="synthesize", progress=ctx.progress and not done
    )
    kept = [QA.from_dict(r) for r in rows if r.get("keep", True)]
    if cfg.fallback == "label":  # weak base models: label-only supervision where no answer named the label
        kept += [
            QA(r["id"], r["image"], r["question"], label_answer(r["label"]), r["label"], "fallback")
            for r in rows
            if not r.get("keep", True)
        ]
    if not done:
        named = sum(bool(r.get("keep", True)) for r in rows)
        stage.finish(
            asked=len(rows),
            kept=len(kept),
            named_label=named,
            keep_rate=round(named / max(1, len(rows)), 4),
            kept_repaired=sum(bool(r.get("keep", True) and r.get("repaired")) for r in rows),
        )
    if not kept:
        raise SelfsynthError(
            "synthesis kept no answer: the base model never named the label when told it; check the model "
            "and the prompt pools (round_1/synthesize/part-*.jsonl has every answer), or pass "
            "synthesize.fallback=label to train on label-only answers where that happens"
        )
    return kept, fp
