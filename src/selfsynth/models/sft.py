"""LoRA supervised fine-tuning of a VLM on (image, question, answer) records, under accelerate.

One loop for a laptop and a cluster: ``accelerate launch`` gives several processes (DDP), a plain
call gives one. Each optimizer step takes one global batch of ``cfg.batch_size`` examples
(micro_batch_size x grad-accumulation x processes) from a seeded stream of epoch permutations;
process r takes its contiguous slice. The loss is summed over answer + EOS tokens and divided by
the number of such tokens in the whole global batch, so 1 process and N processes at the same
global batch compute the same gradient. The vision tower is frozen (its features come from the
feature cache), LoRA sits on the language model's linears, the projector trains in full.

A checkpoint (adapter + optimizer + scheduler + step; ``models.train_checkpoint``) is written
every ``checkpoint_every`` steps; ``resume=True`` continues from it and, because data order,
augmentation and dropout are seeded per step, finishes with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from selfsynth.errors import ConfigError, DataError
from selfsynth.io import atomic_write_text, fsync_tree, write_json
from selfsynth.models.augment import augment
from selfsynth.models.batching import RowCache
from selfsynth.models.chat import IGNORE, answer_suffix, build_messages, encode, open_image
from selfsynth.models.decode import accepts
from selfsynth.models.devices import PAD_MULTIPLE_BF16, cpu_bf16
from selfsynth.models.train_checkpoint import (
    find_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)

log = logging.getLogger(__name__)


def batch_for(
    vlm: Any,
    images: list[Image.Image],
    questions: list[str],
    answers: list[str],
    max_length: int | None = None,
    pad_multiple: int = 1,
) -> dict[str, torch.Tensor]:
    """A right-padded training batch whose labels cover only the answer and its EOS token."""
    prompts = [vlm.prompt(q) for q in questions]
    suffixes = [
        answer_suffix(vlm.processor, build_messages(q), p, a, vlm.end_tokens)
        for q, p, a in zip(questions, prompts, answers, strict=True)
    ]
    return encode(
        vlm.processor,
        images,
        prompts,
        suffixes,
        side="right",
        max_length=max_length,
        pad_multiple=pad_multiple,
    )


def _answer_logits(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 logits, their next-token targets) from the batch's first supervised position on.

    Logits are computed only from there (``logits_to_keep``, where the model takes it): the
    prompt, image tokens included, is often half the sequence, and its vocabulary projection
    would be thrown away.
    """
    labels = batch["labels"].to(device)
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels" and torch.is_tensor(v)}
    target = labels[:, 1:]
    supervised = (target != IGNORE).any(dim=0).nonzero()
    first = int(supervised[0]) if len(supervised) else target.shape[1] - 1
    first -= first % PAD_MULTIPLE_BF16  # a few shapes, not one per batch (see devices.PAD_MULTIPLE_BF16)
    keep = labels.shape[1] - first  # positions first .. end; the last one predicts nothing
    extra = {"logits_to_keep": keep} if accepts(model, "logits_to_keep") else {}
    logits = model(**inputs, use_cache=False, **extra).logits[:, -keep:-1].float()
    return logits, target[:, first:]


def token_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropy over supervised positions, number of such positions)."""
    logits, target = _answer_logits(model, batch, device)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((target != IGNORE).sum())


def answer_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, *, eos: bool = False
) -> torch.Tensor:
    """Per row, the summed log-probability of its supervised tokens (the answer; EOS only if ``eos``).

    What likelihood-ranked multiple choice needs: the same answer prefix scored for each option.
    ``batch_for`` cuts every answer suffix right after the EOS token, so it is each row's last
    supervised position.
    """
    logits, target = _answer_logits(model, batch, device)
    mask = target != IGNORE
    if not eos:  # drop each row's last supervised position
        last = mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1)
        mask[torch.arange(len(mask)), last] = False
    nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
    return -(nll * mask).sum(dim=1)


def token_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each target token, supervised mask), both [rows, positions] from the
    batch's first supervised position on: the answer and its EOS, what a policy gradient needs."""
    logits, target = _answer_logits(model, batch, device)
    nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
    return -nll, target != IGNORE


def _schedule(steps: int, warmup: int):
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        return max(0.0, (steps - s) / max(1, steps - warmup))

    return factor


GROUP_WINDOW = 16  # global batches whose examples are sorted by length together


def _stream(
    n: int, steps: int, global_batch: int, seed: int, lengths: np.ndarray | None = None
) -> np.ndarray:
    """Example indices for every step: seeded epoch permutations, concatenated.

    With ``lengths``, each window of ``GROUP_WINDOW`` global batches of that stream is sorted by
    length, cut into global batches, and the batches of the window are shuffled: the same
    examples are seen in the same part of training, but a batch holds examples of similar length,
    so little of it is padding (a third of the tokens with random batches of the world's mix).
    Grouping is per global batch, so one process and N processes still compute the same gradient.
    """
    need = steps * global_batch
    epochs = math.ceil(need / n)
    order = np.concatenate([np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)])[:need]
    if lengths is None:
        return order
    window = global_batch * GROUP_WINDOW
    out = []
    for w, lo in enumerate(range(0, need, window)):
        chunk = order[lo : lo + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches = [chunk[b : b + global_batch] for b in range(0, len(chunk), global_batch)]
        perm = np.random.default_rng([seed, 1_000_003, w]).permutation(len(batches))
        out.extend(batches[i] for i in perm)
    return np.concatenate(out)


def example_lengths(examples: list[Any]) -> np.ndarray:
    """A model-independent length proxy for grouping: characters of question + answer.

    Image tokens are the same for every example of a fixed-size model, and characters track
    tokens closely enough to make batches of similar length without tokenising everything.
    """
    return np.array([len(e.question) + len(e.answer) for e in examples])


def _plan(n: int, cfg: Any, world: int, micro: int) -> tuple[int, int, int]:
    """(steps, grad-accumulation, global batch) for n examples."""
    if cfg.batch_size < 1 or micro < 1 or cfg.epochs <= 0:
        raise ConfigError("finetune.batch_size, finetune.micro_batch_size and finetune.epochs must be > 0")
    accum = max(1, math.ceil(cfg.batch_size / (micro * world)))
    global_batch = micro * accum * world
    if global_batch != cfg.batch_size:
        log.warning(
            "global batch %d = %d micro x %d accumulation x %d processes (asked for %d)",
            global_batch,
            micro,
            accum,
            world,
            cfg.batch_size,
        )
    steps = max(1, round(cfg.epochs * n / global_batch))
    return steps, accum, global_batch


def train_lora(
    vlm: Any,
    examples: list[Any],
    cfg: Any,
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
    checkpoint_every: int = 50,
    max_steps: int | None = None,
    micro_batch_size: int | None = None,
    gradient_checkpointing: bool | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter (+ projector) on ``examples``; writes ``out_dir/adapter`` and ``train_log.jsonl``.

    ``max_steps`` stops early (leaving a checkpoint, as a kill would); ``resume`` continues from
    ``out_dir/checkpoint`` or returns the finished run's summary. On a GPU with a bf16/fp16
    model, the trainable weights (LoRA, projector) train in fp32 under autocast while the frozen
    base stays in half precision, and activations are recomputed (``gradient_checkpointing``,
    default on for CUDA) to fit 7B models. ``on_step(row)`` gets each step's ``train_log.jsonl`` row
    on the main process, after the row is written (experiment tracking).
    """
    from accelerate import Accelerator
    from peft import get_peft_model

    from selfsynth.models.lora import lora_config, quiet_peft
    from selfsynth.models.lora_dense import lora_forward

    if not examples:
        raise DataError("no training examples: the synthesize/sample stage produced nothing to train on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "train_state.json"
    if resume and state_file.is_file() and (out / "adapter" / "adapter_config.json").is_file():
        done = json.loads(state_file.read_text(encoding="utf-8"))
        log.info("training in %s already finished; loading its adapter", out)
        vlm.load_adapter(out / "adapter")
        return done["summary"]
    half = vlm.device.type == "cuda" and vlm.dtype in (torch.bfloat16, torch.float16)
    precision = ("bf16" if vlm.dtype == torch.bfloat16 else "fp16") if half else "no"
    # CPU bf16 autocast is applied around each step rather than through Accelerator's
    # mixed_precision, whose process-wide state would pin the first call's choice for good
    cpu_autocast = vlm.device.type == "cpu" and vlm.dtype == torch.float32 and cpu_bf16(cfg.cpu_precision)
    pad_multiple = PAD_MULTIPLE_BF16 if cpu_autocast else 1
    acc = Accelerator(cpu=vlm.device.type == "cpu", mixed_precision=precision)
    world, rank = acc.num_processes, acc.process_index
    if acc.device != vlm.device:
        vlm.model.to(acc.device)
        vlm.device = acc.device
    micro = micro_batch_size or cfg.micro_batch_size
    steps, accum, global_batch = _plan(len(examples), cfg, world, micro)
    lengths = example_lengths(examples) if cfg.group_by_length else None
    order = _stream(len(examples), steps, global_batch, seed, lengths)
    plan = _fingerprint(steps, global_batch, len(examples), seed, lengths is not None)
    torch.manual_seed(seed)  # LoRA A matrices start random: same seed, same start
    with quiet_peft():
        model = get_peft_model(vlm.model, lora_config(vlm.model, cfg))
    checkpointing = vlm.device.type == "cuda" if gradient_checkpointing is None else gradient_checkpointing
    if checkpointing:
        model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    if half:  # fp32 master weights: a 1e-5 update vanishes in bf16
        for p in params:
            p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(steps, warmup))
    ckpt = find_checkpoint(out) if resume else None
    start, log_rows = load_checkpoint(ckpt, model, opt, sched, plan) if ckpt else (0, [])
    model, opt = acc.prepare(model, opt)
    _train_mode(vlm, model)
    if acc.is_main_process:
        atomic_write_text(out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log_rows))
    stop = steps if max_steps is None else min(steps, start + max_steps)
    t0 = time.time()
    bar = tqdm(range(start, stop), desc="finetune", disable=not (progress and acc.is_main_process))
    # Augmented pixels are new every time: look them up, but do not fill the feature cache with them.
    no_store = (
        vlm.features.no_store() if (cfg.augment and vlm.features is not None) else contextlib.nullcontext()
    )
    # Augmented images are new every step, so only unaugmented batches reuse per-example rows.
    rows = None if cfg.augment else RowCache(vlm, examples, cfg.max_length)
    with no_store, lora_forward(acc.unwrap_model(model), cfg.lora_forward) as merged_layers:
        if merged_layers:
            log.info("%d LoRA layers train as one merged matmul (finetune.lora_forward)", merged_layers)
        for step in bar:
            torch.manual_seed(seed * 1_000_003 + step * 101 + rank)  # dropout: reproducible after a resume
            lo = step * global_batch + rank * micro * accum
            idx = order[lo : lo + micro * accum]
            batches = [
                rows.batch(idx[k : k + micro], pad_multiple)
                if rows is not None
                else _micro_batch(vlm, examples, idx[k : k + micro], lo + k, cfg, seed, pad_multiple)
                for k in range(0, len(idx), micro)
            ]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_autocast):
                loss, n_tokens, norm, lr = _step(acc, model, params, opt, sched, batches, cfg.max_grad_norm)
            row = {
                "step": step + 1,
                "loss": loss,
                "lr": lr,
                "tokens": n_tokens,
                "grad_norm": norm,
                "seconds": round(time.time() - t0, 3),
            }
            log_rows.append(row)
            bar.set_postfix(loss=f"{loss:.4f}")
            if acc.is_main_process:
                with open(out / "train_log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                if on_step is not None:
                    on_step(row)
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                _save_checkpoint(acc, out, model, opt, sched, step + 1, plan)
    acc.wait_for_everyone()
    if stop < steps:  # stopped early on purpose: leave a checkpoint to resume from
        _save_checkpoint(acc, out, model, opt, sched, stop, plan)
    peft_model = acc.unwrap_model(model)
    if checkpointing:
        peft_model.get_base_model().activation_checkpointing_disable()
    summary = {
        "steps": len(log_rows),
        "loss_first": log_rows[0]["loss"] if log_rows else None,
        "loss_last": log_rows[-1]["loss"] if log_rows else None,
        "seconds": round(time.time() - t0, 3),
        "examples": len(examples),
        "global_batch": global_batch,
        "processes": world,
        "total_steps": steps,
    }
    if acc.is_main_process and stop == steps:
        peft_model.save_pretrained(out / "adapter")
        fsync_tree(out / "adapter")  # train_state.json vouches for the adapter: it must be on disk first
        write_json(state_file, {"done": True, "summary": summary})
        remove_checkpoints(out)
    acc.wait_for_everyone()
    if half:  # back to the model's dtype, so generation runs without autocast
        for p in params:
            p.data = p.data.to(vlm.dtype)
    vlm.model = peft_model.eval()
    return summary


def _step(
    acc: Any,
    model: Any,
    params: list[torch.nn.Parameter],
    opt: Any,
    sched: Any,
    batches: list[Any],
    max_grad_norm: float,
) -> tuple[float, int, float | None, float]:
    """One optimizer step over this process's micro-batches; (global loss, tokens, grad norm, lr).

    Each micro-batch's summed token loss is divided by the answer tokens of the whole global
    batch (all processes); DDP averages gradients over processes, hence the ``* world``.
    """
    world = acc.num_processes
    count = torch.tensor(sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches), device=acc.device)
    n_tokens = int(acc.reduce(count, "sum")) if world > 1 else int(count)
    step_sum = torch.zeros((), device=acc.device)
    for k, b in enumerate(batches):
        sync = contextlib.nullcontext() if k == len(batches) - 1 else acc.no_sync(model)
        with sync:
            total, _ = token_loss(model, b, acc.device)
            acc.backward(total / max(n_tokens, 1) * world)
        step_sum += total.detach()
    norm = acc.clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else None
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    loss = float((acc.reduce(step_sum, "sum") if world > 1 else step_sum) / max(n_tokens, 1))
    return loss, n_tokens, None if norm is None else float(norm), lr


def _train_mode(vlm: Any, model: torch.nn.Module) -> None:
    """Train mode for the adapted language model, eval mode for the frozen tower (dropout/batch-norm)."""
    from selfsynth.models.features import find_tower

    model.train()
    found = find_tower(vlm.model)
    if found is not None:
        found[1].eval()
        merger = getattr(found[1], "merger", None)
        if merger is not None:
            merger.train()


def _micro_batch(
    vlm: Any, examples: list[Any], idx: np.ndarray, pos: int, cfg: Any, seed: int, pad_multiple: int = 1
) -> dict[str, torch.Tensor]:
    images = []
    for k, i in enumerate(idx):
        im = open_image(examples[i].image)
        if cfg.augment:
            im = augment(im, np.random.default_rng([seed, 7, pos + k]))
        images.append(im)
    return batch_for(
        vlm,
        images,
        [examples[i].question for i in idx],
        [examples[i].answer for i in idx],
        max_length=cfg.max_length,
        pad_multiple=pad_multiple,
    )


def _fingerprint(steps: int, global_batch: int, n: int, seed: int, grouped: bool) -> dict[str, int]:
    """What a checkpoint's step count means: the same stream of batches only under these."""
    return {
        "steps": steps,
        "global_batch": global_batch,
        "examples": n,
        "seed": seed,
        "grouped": int(grouped),
    }


def _save_checkpoint(
    acc: Any, out: Path, model: Any, opt: Any, sched: Any, step: int, plan: dict[str, int]
) -> None:
    if acc.is_main_process:
        save_checkpoint(out, acc.unwrap_model(model), opt, sched, step, plan)
    acc.wait_for_everyone()
