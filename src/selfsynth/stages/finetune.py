"""Stage ``finetune``: LoRA SFT of this round's data on the previous round's merged model, then merge.

Each round trains a NEW LoRA on the previous round's merged model (data is regenerated each round,
not accumulated). Domain pairs are mixed with general pairs (paper: 1:1) so the model keeps its
general ability; on the embedded world the general pairs are the world's captions and generic VQA.
The merged model of round r is ``round_r/finetune/merged/``: a plain transformers checkpoint.
Training checkpoints every few steps and a resumed stage continues from the last one; the general
pairs count in the fingerprint by content, so an edited ``finetune.general_data`` redoes the stage.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selfsynth import distributed
from selfsynth.data.registry import get_capabilities
from selfsynth.io import fingerprint, fsync_tree, iter_jsonl, write_jsonl
from selfsynth.records import QA
from selfsynth.runs import Stage, stage_fp
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)
CHECKPOINT_EVERY = 50  # optimizer steps between training checkpoints, at most


def general_pairs(ctx: Context) -> list[QA]:
    """General (non-domain) pairs: a user JSONL, else the dataset's own for the training images, else none."""
    cfg = ctx.cfg
    if cfg.finetune.general_data:
        from selfsynth.data.checks import checked_path

        out: list[QA] = []
        path = Path(cfg.finetune.general_data)
        for n, r in iter_jsonl(path):
            # Images must lie under the file's folder, as any dataset's under its root.
            image = checked_path(path.parent, r.get("image"), file=str(path), line=n)
            out.append(QA(f"general:{n}", str(image), r["question"], r["answer"], "", "general"))
        return out
    own = get_capabilities(cfg.data).general_pairs
    return own(cfg.data, ctx.train, ctx.pools.describe) if own else []


def checkpoint_every(n_examples: int, cfg: Any) -> int:
    """Steps between checkpoints: ``CHECKPOINT_EVERY``, or a tenth of a shorter training."""
    steps = max(1, round(cfg.epochs * n_examples / max(1, cfg.batch_size)))
    return max(1, min(CHECKPOINT_EVERY, steps // 10))


def run_finetune(
    ctx: Context,
    rnd: int,
    base_path: str,
    pairs: list[QA],
    *inputs_fp: str,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[str, str]:
    """Train this round's LoRA; returns the merged model directory and the stage fingerprint.

    ``on_step`` receives each training step's log row on the main rank (experiment tracking).
    """
    cfg = ctx.cfg.finetune
    general = general_pairs(ctx)
    general_fp = fingerprint([[q.id, q.image, q.question, q.answer] for q in general])
    settings = {**asdict(cfg), "seed": ctx.cfg.seed, "round": rnd, "base": base_path, "general": general_fp}
    fp = stage_fp(settings, *inputs_fp)
    stage = Stage(ctx.run_dir, f"round_{rnd}/finetune", fp)
    merged = stage.dir / "merged"
    if stage.done() and merged.is_dir():
        return str(merged), fp
    stage.begin()
    rng = random.Random(ctx.cfg.seed * 1000 + rnd)
    n_general = min(len(general), round(cfg.general_mix * len(pairs)))
    mixed = list(pairs) + rng.sample(general, n_general)
    rng.shuffle(mixed)
    if distributed.is_main():
        write_jsonl(stage.dir / "train.jsonl", [q.to_dict() for q in mixed])
    vlm = ctx.vlm(base_path)
    # Under a launcher every rank trains (DDP); the main rank alone merges and writes the manifest.
    every = checkpoint_every(len(mixed), cfg)
    # Passed only when set, so an engine whose train_lora takes no such argument trains as before.
    tracked = {"on_step": on_step} if on_step is not None else {}
    info = vlm.train_lora(
        mixed,
        cfg,
        stage.dir,
        seed=ctx.cfg.seed + rnd,
        progress=ctx.progress,
        resume=True,  # a checkpoint here has this stage's fingerprint: begin() cleared any other
        checkpoint_every=every,
        **tracked,
    )
    if distributed.is_main():
        vlm.merge(stage.dir / "adapter", merged)
        fsync_tree(merged)  # the manifest that follows must not outlive the weights in a crash
    ctx.release_vlm()  # the in-memory model now carries adapters; never reuse it
    if distributed.is_main():
        stage.finish(domain_pairs=len(pairs), general_pairs=n_general, **info)
    return str(merged), fp
