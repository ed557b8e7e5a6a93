"""Stage ``select``: image-level concepts Z* per training image by the information-bottleneck estimator.

Computed once from the base model's descriptions (method.md step 3); the math lives in
``selfsynth.stages.ib_score``. Writes ``concepts/selection.jsonl`` with every candidate's score so a
person can see why a concept was kept.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from selfsynth.io import read_jsonl, write_jsonl
from selfsynth.runs import Stage, stage_fp
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)


def run_select(
    ctx: Context, bank: dict[str, list[str]], descriptions: dict[str, list[str]], *inputs_fp: str
) -> tuple[dict[str, list[str]], str]:
    """Returns ``{image id: [selected concepts, best first]}`` and the stage fingerprint."""
    cfg = ctx.cfg.select
    fp = stage_fp({**asdict(cfg), "embed": asdict(ctx.cfg.embed)}, *inputs_fp)
    stage = Stage(ctx.run_dir, "concepts/select", fp)
    out = ctx.run_dir / "concepts" / "selection.jsonl"
    if stage.done() and out.is_file():
        return {r["id"]: r["selected"] for r in read_jsonl(out)}, fp
    stage.begin()
    from selfsynth.stages.ib_score import ib_scores, select

    concepts = [c for lab in ctx.labels for c in bank[lab]]
    offsets: dict[str, list[int]] = {}
    i = 0
    for lab in ctx.labels:
        offsets[lab] = list(range(i, i + len(bank[lab])))
        i += len(bank[lab])
    enc = ctx.encoder()
    concept_emb = enc.encode(concepts, progress=ctx.progress)
    m = min(len(descriptions[e.id]) for e in ctx.train)
    if m == 0:
        raise RuntimeError("an image has no descriptions; rerun the describe stage")
    flat = [d for e in ctx.train for d in descriptions[e.id][:m]]
    desc_emb = enc.encode(flat, progress=ctx.progress).reshape(len(ctx.train), m, -1)
    candidates = [offsets[e.label] for e in ctx.train]
    scores = ib_scores(desc_emb, concept_emb, candidates, cfg.tau)
    rows = []
    selected: dict[str, list[str]] = {}
    for e, cand, s in zip(ctx.train, candidates, scores, strict=True):
        keep = select(np.asarray(s), cfg.k, cfg.min_keep)
        chosen = [concepts[cand[j]] for j in keep]
        selected[e.id] = chosen
        rows.append(
            {
                "id": e.id,
                "label": e.label,
                "selected": chosen,
                "scores": {concepts[c]: round(float(v), 4) for c, v in zip(cand, s, strict=True)},
            }
        )
    write_jsonl(out, rows)
    sizes = [len(v) for v in selected.values()]
    stage.finish(images=len(rows), mean_selected=round(float(np.mean(sizes)), 3) if sizes else 0.0)
    return selected, fp
