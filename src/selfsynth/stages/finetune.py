"""Stage ``finetune``: LoRA SFT of this round's data on the previous round's merged model, then merge.

Each round trains a NEW LoRA on the previous round's merged model (data is regenerated each round,
not accumulated). Domain pairs are mixed with general pairs (paper: 1:1) so the model keeps its
general ability; on the embedded world the general pairs are the world's captions and generic VQA.
The merged model of round r is ``round_r/finetune/merged/``: a plain transformers checkpoint.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path

from selfsynth import distributed
from selfsynth.data.registry import get_capabilities
from selfsynth.io import iter_jsonl, write_jsonl
from selfsynth.records import QA
from selfsynth.runs import Stage, stage_fp
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)


def general_pairs(ctx: Context) -> list[QA]:
    """General (non-domain) pairs: a user JSONL, else the dataset's own for the training images, else none."""
    cfg = ctx.cfg
    if cfg.finetune.general_data:
        out: list[QA] = []
        path = Path(cfg.finetune.general_data)
        for n, r in iter_jsonl(path):
            image = Path(r["image"])
            image = image if image.is_absolute() else path.parent / image
            out.append(QA(f"general:{n}", str(image), r["question"], r["answer"], "", "general"))
        return out
    own = get_capabilities(cfg.data).general_pairs
    return own(cfg.data, ctx.train, ctx.pools.describe) if own else []


def run_finetune(ctx: Context, rnd: int, base_path: str, pairs: list[QA], *inputs_fp: str) -> tuple[str, str]:
    """Train this round's LoRA; returns the merged model directory and the stage fingerprint."""
    cfg = ctx.cfg.finetune
    fp = stage_fp({**asdict(cfg), "seed": ctx.cfg.seed, "round": rnd, "base": base_path}, *inputs_fp)
    stage = Stage(ctx.run_dir, f"round_{rnd}/finetune", fp)
    merged = stage.dir / "merged"
    if stage.done() and merged.is_dir():
        return str(merged), fp
    stage.begin()
    rng = random.Random(ctx.cfg.seed * 1000 + rnd)
    general = general_pairs(ctx)
    n_general = min(len(general), round(cfg.general_mix * len(pairs)))
    mixed = list(pairs) + rng.sample(general, n_general)
    rng.shuffle(mixed)
    if distributed.is_main():
        write_jsonl(stage.dir / "train.jsonl", [q.to_dict() for q in mixed])
    vlm = ctx.vlm(base_path)
    # Under a launcher every rank trains (DDP); the main rank alone merges and writes the manifest.
    info = vlm.train_lora(mixed, cfg, stage.dir, seed=ctx.cfg.seed + rnd, progress=ctx.progress)
    if distributed.is_main():
        vlm.merge(stage.dir / "adapter", merged)
    ctx.release_vlm()  # the in-memory model now carries adapters; never reuse it
    if distributed.is_main():
        stage.finish(domain_pairs=len(pairs), general_pairs=n_general, **info)
    if distributed.in_collective():
        distributed.barrier()
    return str(merged), fp
