"""Stage ``describe``: the base model describes every training image several times at high temperature.

These self-descriptions are the "D" of the information bottleneck: what the model itself can see
in each image. Reference: 3 prompts x 10 samples, T=1.0, top_p=1.0, 256 tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from selfsynth.records import Example
from selfsynth.runs import Stage, chunk_seed, stage_fp
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)


def run_describe(ctx: Context, model_path: str, model_fp: str) -> tuple[dict[str, list[str]], str]:
    """Returns ``{image id: [descriptions]}`` and the stage fingerprint."""
    cfg = ctx.cfg.describe
    prompts = ctx.pools.describe[: max(1, cfg.prompts)]
    fp = stage_fp(
        {**asdict(cfg), "prompts_text": prompts, "seed": ctx.cfg.seed}, model_fp, *[e.id for e in ctx.train]
    )
    stage = Stage(ctx.run_dir, "round_1/describe", fp)
    if stage.done():
        rows = stage.chunks(ctx.train, ctx.cfg.chunk_size, _never, progress=False)
        return {r["id"]: r["descriptions"] for r in rows}, fp
    stage.begin()

    def work(c: int, chunk: Sequence[Example]) -> list[dict[str, Any]]:
        vlm = ctx.vlm(model_path)
        images = [e.image for e in chunk for _ in prompts]
        texts = [p for _ in chunk for p in prompts]
        outs = vlm.generate(
            images,
            texts,
            n=cfg.samples,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=chunk_seed(ctx.cfg.seed, "describe", c),
            batch_size=cfg.batch_size,
        )
        per = len(prompts)
        return [
            {"id": e.id, "descriptions": [t for o in outs[i * per : (i + 1) * per] for t in o]}
            for i, e in enumerate(chunk)
        ]

    rows = stage.chunks(ctx.train, ctx.cfg.chunk_size, work, desc="describe", progress=ctx.progress)
    stage.finish(images=len(rows), descriptions=sum(len(r["descriptions"]) for r in rows))
    return {r["id"]: r["descriptions"] for r in rows}, fp


def _never(c: int, chunk: Sequence[Example]) -> list[dict[str, Any]]:
    raise RuntimeError("a finished stage is missing chunk files; delete its _manifest.json to redo it")
