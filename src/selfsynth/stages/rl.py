"""Stage ``rl`` (optional, ``rl.enabled``): GRPO on the last round's merged model, then merge.

After the last round, the model answers the evaluation question about training images (all
with a Z*, or ``rl.max_images`` of them) ``rl.group`` times each; an answer earns 1 for naming
the label and a bonus per concept of the image's Z* it cites, minus a penalty per other bank
concept it cites (``rl_reward``), and a LoRA learns from the group-normalised rewards
(``grpo``). The merged model is ``RUN/rl/merged/``; the pipeline evaluates it as ``rl``
(``RUN/rl/evaluate/``, ``results.json["rl"]``).

Why not TRL's ``GRPOTrainer``: it samples with ``model.generate`` (or vLLM) under its own
generation config, so neither our shared-prefill, content-seeded sampling nor the class-name
aware repeat guard would shape the answers it learns from; its VLM path expects processors of
the families it was tested with (not the embedded base model's custom tower and processor),
bypassing the frozen-tower feature cache; and its Trainer checkpoints and datasets would sit
beside this project's stage manifests rather than in them. The loop here (``grpo``) is one short file.

Under a launcher the main rank trains alone (``distributed.main_first``) while the others wait.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from selfsynth.io import fingerprint, fsync_tree
from selfsynth.models.backend import free_memory, load_hf
from selfsynth.records import Example
from selfsynth.runs import Stage, stage_fp
from selfsynth.stages.context import Context
from selfsynth.stages.evaluate import test_subset
from selfsynth.stages.rl_reward import Reward, reward

log = logging.getLogger(__name__)
STAGE = "rl"


def rl_images(train: Sequence[Example], selected: dict[str, list[str]], cap: int) -> list[Example]:
    """The training images with a Z*, sorted by id; ``cap`` > 0 keeps that many, evenly spaced."""
    return test_subset([e for e in train if selected.get(e.id)], cap)


def run_rl(
    ctx: Context,
    model_path: str,
    selected: dict[str, list[str]],
    bank: dict[str, list[str]],
    *inputs_fp: str,
) -> tuple[str, str, dict[str, Any]]:
    """Train and merge the RL model; (merged model directory, stage fingerprint, training summary)."""
    from selfsynth.stages.grpo import train_grpo

    cfg = ctx.cfg.rl
    images = rl_images(ctx.train, selected, cfg.max_images)
    question = ctx.pools.eval_question
    items_fp = fingerprint([[e.id, e.label, e.image, selected[e.id]] for e in images])
    settings = {
        **asdict(cfg),
        "seed": ctx.cfg.seed,
        "question": question,
        "base": model_path,
        "items": items_fp,
    }
    fp = stage_fp(settings, *inputs_fp)
    stage = Stage(ctx.run_dir, STAGE, fp)
    merged = stage.dir / "merged"
    if stage.done() and merged.is_dir():
        return str(merged), fp, _summary(stage.manifest() or {})
    stage.begin()
    citer = ctx.citer()
    phrases = list(dict.fromkeys(p for ps in bank.values() for p in ps))

    def score(e: Example, answer: str) -> Reward:
        return reward(
            answer,
            e.label,
            ctx.labels,
            selected[e.id],
            phrases,
            citer,
            cite_bonus=cfg.cite_bonus,
            cite_cap=cfg.cite_cap,
            outside_penalty=cfg.outside_penalty,
        )

    ctx.release_vlm()  # one model in memory; training needs the Hugging Face one whatever the engine
    vlm = load_hf(model_path, ctx.cfg.model, ctx.cache_dir / "features")
    try:
        info = train_grpo(
            vlm,
            images,
            score,
            cfg,
            stage.dir,
            question=question,
            seed=ctx.cfg.seed,
            allow_repeats=ctx.labels,
            progress=ctx.progress,
        )
        vlm.merge(stage.dir / "adapter", merged)
        fsync_tree(merged)  # the manifest that follows must not outlive the weights in a crash
    finally:
        del vlm  # carries adapters now: never reused
        free_memory()
    manifest = stage.finish(**info)
    log.info("rl: reward %s -> %s over %d steps", info["reward_first"], info["reward_last"], info["steps"])
    return str(merged), fp, _summary(manifest)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in ("stage", "fingerprint", "finished_at")}
