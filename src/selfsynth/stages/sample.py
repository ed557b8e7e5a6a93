"""Stage ``sample`` (rounds 2..R): contrastive rejection sampling of the tuned model's own answers.

The previous round's model answers explain / chain-of-thought questions about each training image
with no label and no concepts in the prompt. Every candidate is scored against the image's Z*
with ``rs_score`` (method.md step 6); per question the best candidate that names the right label
(filter, then argmax) becomes training data. Negatives are a setting: ``class_rest`` (Z_c minus
Z*, the poster), ``all_rest`` or ``all`` (the reference code's bug, for ablation). When no
candidate names the label, ``fallback=label`` stores ("what is this?", "This is an image of
{label}.") and ``fallback=drop`` drops the question. ``fallback=synth`` (an extension) takes the
image's round-1 synthesized pair instead, where there is one: the images the model still gets
wrong are the ones where a bare label teaches least, and the round-1 answer cites the expert
concepts seen in that image (Z*). ``method=nofilter`` keeps the first sample of each question as
is (the no-filtering ablation). ``outside_penalty`` > 0 (an extension) lowers each candidate's
score per cited concept outside the image's Z* (``rs_score.penalized``); the rows then also
record those counts (``outside``). ``max_outside`` >= 0 (an extension) makes a candidate citing
more than that many concepts outside Z* ineligible, like one not naming the label, so such an
image falls back (``fallback``) instead of training on a hallucinated part. ``cite_bonus`` > 0
(an extension) raises each candidate's score per concept of Z* it cites (rows record ``inside``).
``replay_first`` (an extension) adds round 1's explained answers to every later round's pairs:
each round otherwise learns only from its own samples, which cite fewer concepts than round 1's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from selfsynth.io import write_jsonl
from selfsynth.prompts import label_answer
from selfsynth.records import QA, Example
from selfsynth.runs import Stage, chunk_seed, hashed_settings, stage_fp
from selfsynth.stages.context import Context
from selfsynth.stages.rs_score import negatives, penalized, rs_score, rs_scores, zstar_counts
from selfsynth.text import label_in, names_label, repeated_phrase, without_repeats

__all__ = ["rs_score", "rs_scores", "run_sample", "FALLBACK_QUESTION"]
log = logging.getLogger(__name__)
EXPLAINED = ("explain", "cot")  # the question kinds whose answers explain: sampled, and replayed
FALLBACK_QUESTION = "What is this?"
# sample.fallback: what a question gets when no candidate names the label
FALLBACKS = ("label", "drop", "synth")


def run_sample(
    ctx: Context,
    rnd: int,
    model_path: str,
    selected: dict[str, list[str]],
    bank: dict[str, list[str]],
    *inputs_fp: str,
    first_round: Sequence[QA] = (),
) -> tuple[list[QA], str]:
    """Rejection-sample round ``rnd``'s pairs; ``first_round`` (round 1's pairs) feeds ``fallback=synth``
    and ``replay_first``."""
    cfg = ctx.cfg.sample
    method = ctx.cfg.method
    unhashed = {"outside_penalty": 0.0, "max_outside": -1, "cite_bonus": 0.0, "replay_first": False}  # off
    settings = hashed_settings(cfg, unhashed)
    fp = stage_fp(
        {**settings, "method": method, "seed": ctx.cfg.seed, "tau": ctx.cfg.select.tau, "round": rnd},
        *inputs_fp,
    )
    stage = Stage(ctx.run_dir, f"round_{rnd}/sample", fp)
    done = stage.done()
    if not done:
        stage.begin()
    enc = ctx.encoder() if method != "nofilter" else None
    tau = ctx.cfg.select.tau
    penalty = cfg.outside_penalty if method != "nofilter" else 0.0  # nofilter never reads the scores
    cap = cfg.max_outside if method != "nofilter" else -1
    bonus = cfg.cite_bonus if method != "nofilter" else 0.0
    citer = ctx.citer() if penalty or bonus or cap >= 0 else None
    phrases = list(dict.fromkeys(p for ps in bank.values() for p in ps))

    def work(c: int, chunk: Sequence[Example]) -> list[dict[str, Any]]:
        rng = random.Random(chunk_seed(ctx.cfg.seed, f"sample-{rnd}", c))
        asks = [
            (e, kind, q) for e in chunk for kind, q in ctx.pools.draw(rng, cfg.questions, kinds=EXPLAINED)
        ]
        outs = ctx.vlm(model_path).generate(
            [e.image for e, _, _ in asks],
            [q for _, _, q in asks],
            n=cfg.samples,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=chunk_seed(ctx.cfg.seed, f"sample-gen-{rnd}", c),
            batch_size=cfg.batch_size,
            no_repeat_ngram=cfg.no_repeat_ngram,
            allow_repeats=ctx.labels,
        )
        cand_lists = [[t.strip() for t in o] for o in outs]
        vec: dict[str, np.ndarray] = {}
        if enc is not None:  # one encoder call per chunk: candidates, Z* and negatives together
            negs = {e.id: negatives(cfg.negatives, e.label, selected[e.id], bank) for e in chunk}
            texts = sorted(
                {t for cl in cand_lists for t in cl}
                | {z for e in chunk for z in selected[e.id]}
                | {n for v in negs.values() for n in v}
            )
            vec = dict(zip(texts, enc.encode(texts), strict=True))
        rows = []
        for i, ((e, kind, q), cands) in enumerate(zip(asks, cand_lists, strict=True)):
            ok = [names_label(t, e.label, ctx.labels) for t in cands]
            scores = [0.0] * len(cands)
            if enc is not None:
                pos = np.stack([vec[z] for z in selected[e.id]])
                neg = (
                    np.stack([vec[n] for n in negs[e.id]])
                    if negs[e.id]
                    else np.zeros((0, pos.shape[1]), np.float32)
                )
                scores = [float(s) for s in rs_scores(np.stack([vec[t] for t in cands]), pos, neg, tau)]
            row = {
                "id": f"{e.id}#{i}",
                "image_id": e.id,
                "image": e.image,
                "label": e.label,
                "kind": kind,
                "question": q,
                "candidates": cands,
                "names_label": ok,
                "scores": scores,
            }
            if citer is not None:
                inside, row["outside"] = zstar_counts(cands, selected[e.id], phrases, citer)
                if bonus:
                    row["inside"] = inside
                row["scores"] = penalized(scores, row["outside"], penalty, inside, bonus)
                if cap >= 0:  # too many concepts the image was not found to show: not eligible
                    row["names_label"] = [ok and n <= cap for ok, n in zip(ok, row["outside"], strict=True)]
            rows.append(row)
        return rows

    rows = stage.chunks(
        ctx.train, ctx.cfg.chunk_size, work, desc=f"sample r{rnd}", progress=ctx.progress and not done
    )
    accepted = accept(rows, method, cfg.fallback, cfg.avoid_repeats, first_round)
    extra = replayed(first_round) if cfg.replay_first else []
    if not done:
        write_jsonl(stage.dir / "accepted.jsonl", [a.to_dict() for a in accepted])
        n_fb = sum(a.kind == "fallback" for a in accepted)
        stage.finish(
            questions=len(rows),
            accepted=len(accepted) - n_fb,
            fallback=n_fb,
            candidates=sum(len(r["candidates"]) for r in rows),
            label_rate=round(float(np.mean([x for r in rows for x in r["names_label"]] or [0])), 4),
            replayed=len(extra),
        )
    return accepted + extra, fp


def accept(
    rows: list[dict[str, Any]],
    method: str,
    fallback: str,
    avoid_repeats: bool = False,
    first_round: Sequence[QA] = (),
) -> list[QA]:
    """Per question: filter candidates naming the label, then take the highest score.

    With ``avoid_repeats``, a candidate that repeats a phrase (``text.repeated_phrase``) is taken
    only when every candidate naming the label does, and then loses its repeated list items
    (``text.without_repeats``): the contrastive score alone favours an answer that repeats
    the concept closest to Z*, and the next round learns the repetition.
    """
    out: list[QA] = []
    earlier = _first_pairs(first_round) if fallback == "synth" else {}
    for r in rows:
        if method == "nofilter":
            out.append(QA(r["id"], r["image"], r["question"], r["candidates"][0], r["label"], r["kind"]))
            continue
        good = [j for j, ok in enumerate(r["names_label"]) if ok]
        if good:
            fresh = [j for j in good if not repeated_phrase(r["candidates"][j], (r["label"],))]
            best = max((fresh if avoid_repeats and fresh else good), key=lambda j: (r["scores"][j], -j))
            answer = r["candidates"][best]
            if avoid_repeats and not fresh:  # every candidate repeats: drop the repeated list items
                fixed = without_repeats(answer, r["label"])
                if fixed is not None and label_in(fixed, r["label"]):
                    answer = fixed
            out.append(
                QA(
                    r["id"],
                    r["image"],
                    r["question"],
                    answer,
                    r["label"],
                    r["kind"],
                    meta={"score": r["scores"][best]},
                )
            )
        elif fallback == "synth" and r["image"] in earlier:
            first = earlier[r["image"]]
            out.append(QA(r["id"], r["image"], first.question, first.answer, r["label"], "fallback"))
        elif fallback in ("label", "synth"):
            out.append(
                QA(r["id"], r["image"], FALLBACK_QUESTION, label_answer(r["label"]), r["label"], "fallback")
            )
    return out


def replayed(first_round: Sequence[QA]) -> list[QA]:
    """Round 1's explained answers (``replay_first``), under ids of their own beside this round's."""
    return [replace(q, id=f"r1:{q.id}") for q in first_round if q.kind in EXPLAINED]


def _first_pairs(pairs: Sequence[QA]) -> dict[str, QA]:
    """Round 1's first pair per image file that names its label (label-only fallbacks are not kept)."""
    out: dict[str, QA] = {}
    for q in pairs:
        if q.kind != "fallback":
            out.setdefault(q.image, q)
    return out
