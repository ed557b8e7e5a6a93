"""GRPO on a loaded VLM: sample a group of answers per image, reward them, move the policy toward the better.

One step takes ``batch_size`` images from a seeded stream of epoch permutations, samples
``group`` answers to each from the policy as it is now (``VLM.generate``: one shared prefill
per image, sample j seeded by the step and the image), scores them, normalises the rewards
within each group (``rl_reward.group_advantages``) and makes one optimizer step on

    loss = mean over answers i of [ -A_i * mean_t log pi(o_it) + beta * mean_t k3_it ]
    k3_it = exp(ref_it - logp_it) - (ref_it - logp_it) - 1

over the answer's tokens and its EOS. Each batch serves one update, so the policy that sampled
is the one differentiated: GRPO's importance ratio is 1 and its clipping never acts, and no copy
of the old policy is kept. The reference is the same model with its adapter disabled (peft
``disable_adapter``), i.e. the round's merged model, so no second copy is loaded either.

Answers are scored as text and re-encoded for the loss, as the SFT stages train on them; for a
model that answers the way its chat template expects (every model the loop tuned does) these are
the tokens it sampled. Checkpoints (``models.train_checkpoint``) every ``checkpoint_every`` steps
let a killed run continue; the per-step seeds make it continue the same run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from selfsynth.config_rl import RLConfig
from selfsynth.errors import DataError
from selfsynth.io import atomic_write_text, fsync_tree, write_json
from selfsynth.models.chat import open_image
from selfsynth.models.features import find_tower
from selfsynth.models.sft import batch_for, token_logprobs
from selfsynth.models.train_checkpoint import (
    find_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from selfsynth.records import Example
from selfsynth.runs import chunk_seed
from selfsynth.stages.rl_reward import Reward, group_advantages

log = logging.getLogger(__name__)
Scorer = Callable[[Example, str], Reward]


def grpo_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor | None, mask: torch.Tensor, adv: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(each answer's loss term, each answer's mean k3 KL) from [answers, positions] token log-probs.

    ``mask`` marks the answer's positions; ``ref_logp`` None (or ``beta`` 0) leaves the KL out.
    """
    m = mask.to(logp.dtype)
    n = m.sum(dim=1).clamp(min=1.0)
    policy = -adv * (logp * m).sum(dim=1) / n
    if ref_logp is None or beta == 0:
        return policy, torch.zeros_like(policy)
    d = (ref_logp - logp) * m  # 0 off the answer, where k3 is then 0 too
    kl = ((torch.exp(d) - d - 1.0) * m).sum(dim=1) / n
    return policy + beta * kl, kl.detach()


def image_order(n: int, steps: int, batch: int, seed: int) -> np.ndarray:
    """The image index of every slot of every step: seeded epoch permutations, concatenated."""
    need = steps * batch
    perms = [np.random.default_rng([seed, 17, e]).permutation(n) for e in range(math.ceil(need / n))]
    return np.concatenate(perms)[:need]


def train_grpo(
    vlm: Any,
    examples: Sequence[Example],
    score: Scorer,
    cfg: RLConfig,
    out_dir: str | Path,
    *,
    question: str,
    seed: int = 0,
    allow_repeats: Sequence[str] = (),
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train a LoRA on ``vlm`` by GRPO; writes ``out_dir/adapter``, ``train_log.jsonl`` and ``train_state.json``.

    A finished run in ``out_dir`` is loaded, not redone; a checkpoint there is continued.
    ``max_steps`` stops early with a checkpoint, as a kill would (for tests).
    """
    from peft import get_peft_model

    from selfsynth.models.lora import lora_config, quiet_peft

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "train_state.json"
    if state_file.is_file() and (out / "adapter" / "adapter_config.json").is_file():
        log.info("RL training in %s already finished; loading its adapter", out)
        vlm.load_adapter(out / "adapter")
        return json.loads(state_file.read_text(encoding="utf-8"))["summary"]
    if not examples:
        raise DataError("no training image has selected concepts (Z*): nothing for the RL round to train on")
    half = vlm.device.type == "cuda" and vlm.dtype in (torch.bfloat16, torch.float16)
    torch.manual_seed(seed)  # LoRA A matrices start random: same seed, same start
    with quiet_peft():
        model = get_peft_model(vlm.model, lora_config(vlm.model, cfg))
    checkpointing = vlm.device.type == "cuda"
    if checkpointing:
        model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    if half:  # fp32 master weights, as in SFT: a 1e-5 update vanishes in bf16
        for p in params:
            p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # constant; checkpoints carry one
    plan = {
        "steps": cfg.steps,
        "global_batch": cfg.batch_size * cfg.group,
        "examples": len(examples),
        "seed": seed,
    }
    ckpt = find_checkpoint(out)
    start, rows = load_checkpoint(ckpt, model, opt, sched, plan) if ckpt else (0, [])
    atomic_write_text(out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    vlm.model = model  # generation samples from the policy being trained
    order = image_order(len(examples), cfg.steps, cfg.batch_size, seed)
    stop = cfg.steps if max_steps is None else min(cfg.steps, start + max_steps)
    amp = torch.autocast(vlm.device.type, dtype=vlm.dtype, enabled=half)
    t0 = time.time()
    for step in tqdm(range(start, stop), desc="rl", disable=not progress, leave=False):
        torch.manual_seed(seed * 1_000_003 + step * 101)  # LoRA dropout: reproducible after a resume
        batch = [examples[i] for i in order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
        with amp:
            groups = vlm.generate(
                [e.image for e in batch],
                [question] * len(batch),
                n=cfg.group,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens,
                seed=chunk_seed(seed, "rl", step),
                batch_size=cfg.batch_size,
                no_repeat_ngram=cfg.no_repeat_ngram,
                allow_repeats=allow_repeats,
            )
        answers = [(e, a) for e, g in zip(batch, groups, strict=True) for a in g]
        rewards = [score(e, a) for e, a in answers]
        adv = group_advantages([r.value for r in rewards], cfg.group)
        _train_mode(model)
        with amp:
            loss, kl, used = _update(vlm, model, answers, adv, cfg, question)
        norm = None
        if used:
            if cfg.max_grad_norm > 0:
                norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        values = [r.value for r in rewards]
        row = {
            "step": step + 1,
            "loss": loss,
            "reward": float(np.mean(values)),
            "reward_std": float(np.std(values)),
            "correct": float(np.mean([r.correct for r in rewards])),
            "grounded": float(np.mean([len(r.grounded) for r in rewards])),
            "outside": float(np.mean([len(r.outside) for r in rewards])),
            "kl": kl,
            "trained_answers": used,
            "grad_norm": norm,
            "seconds": round(time.time() - t0, 3),
        }
        rows.append(row)
        with open(out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out, model, opt, sched, step + 1, plan)
    if stop < cfg.steps:
        save_checkpoint(out, model, opt, sched, stop, plan)
    if checkpointing:
        model.get_base_model().activation_checkpointing_disable()
    summary = {
        "steps": len(rows),
        "total_steps": cfg.steps,
        "images": len(examples),
        "answers_per_step": cfg.batch_size * cfg.group,
        "reward_first": rows[0]["reward"] if rows else None,
        "reward_last": rows[-1]["reward"] if rows else None,
        "correct_first": rows[0]["correct"] if rows else None,
        "correct_last": rows[-1]["correct"] if rows else None,
        "seconds": round(time.time() - t0, 3),
    }
    if stop == cfg.steps:
        model.save_pretrained(out / "adapter")
        fsync_tree(out / "adapter")  # train_state.json vouches for the adapter: it must be on disk first
        write_json(state_file, {"done": True, "summary": summary})
        remove_checkpoints(out)
    if half:  # back to the model's dtype, so later generation needs no autocast
        for p in params:
            p.data = p.data.to(vlm.dtype)
    vlm.model = model.eval()
    return summary


def _update(
    vlm: Any, model: Any, answers: list[tuple[Example, str]], adv: list[float], cfg: RLConfig, question: str
) -> tuple[float, float, int]:
    """Accumulate one step's gradient over micro-batches; (loss, mean KL, answers that took part).

    Without a KL term an answer of advantage 0 adds nothing, so it is not run through the model.
    """
    beta = cfg.kl
    todo = [k for k in range(len(answers)) if beta > 0 or adv[k] != 0.0]
    total = len(answers)
    loss_sum = kl_sum = 0.0
    for lo in range(0, len(todo), cfg.micro_batch_size):
        ks = todo[lo : lo + cfg.micro_batch_size]
        batch = batch_for(
            vlm,
            [open_image(answers[k][0].image) for k in ks],
            [question] * len(ks),
            [answers[k][1] for k in ks],
            max_length=cfg.max_length,
        )
        logp, mask = token_logprobs(model, batch, vlm.device)
        ref = None
        if beta > 0:
            with torch.no_grad(), model.disable_adapter():
                ref, _ = token_logprobs(model, batch, vlm.device)
        a = torch.tensor([adv[k] for k in ks], dtype=logp.dtype, device=logp.device)
        per_answer, kl = grpo_loss(logp, ref, mask, a, beta)
        (per_answer.sum() / total).backward()
        loss_sum += float(per_answer.detach().sum())
        kl_sum += float(kl.sum())
    return loss_sum / total, (kl_sum / len(todo) if todo and beta > 0 else 0.0), len(todo)


def _train_mode(model: torch.nn.Module) -> None:
    """Train mode for the adapted language model, eval mode for the frozen tower (as in SFT)."""
    model.train()
    found = find_tower(model)
    if found is not None:
        found[1].eval()
        merger = getattr(found[1], "merger", None)
        if merger is not None:
            merger.train()
