"""Pretrain the base VLM's projector and decoder on (image, prompt, answer) triples, tower frozen.

The tower is frozen, so every image is encoded once up front (``encode_images``) and training
runs on the cached ``[N, tokens, 1280]`` features: the projector output is scattered into the
image-token positions of the embedded prompt, exactly where ``LlavaModel`` would put it. This
is the main speed trick (the tower costs more per image than the tiny decoder per example).

The loop is resumable: every ``checkpoint_every`` steps it saves the trainable weights, the
optimizer state and the step; batches are drawn from an RNG seeded by ``(seed, step)``, so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from selfsynth.basevlm.probe import PartProbe, PartTargets
from selfsynth.basevlm.tokenizer import IM_END, IMAGE_TOKEN, render_prompt
from selfsynth.models.devices import PAD_MULTIPLE_BF16, cpu_bf16, round_up

logger = logging.getLogger(__name__)


@dataclass
class Triple:
    """One training example: image index into the feature tensor, user question, answer."""

    image: int
    question: str
    answer: str


@dataclass
class TrainSettings:
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    warmup_steps: int = 30
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 256
    checkpoint_every: int = 200
    seed: int = 0
    part_loss: float = 1.0  # weight of the auxiliary part probe (used when targets are given)
    # "words": the probe scores image tokens against the decoder's embeddings of the value words
    # (needs ``PartTargets.words``); "linear": a linear head per part (see probe.PartProbe)
    probe_readout: str = "linear"
    # Text-only steps before the image steps, on ``pretrain(text=...)`` examples (constant lr
    # after warm-up). Copying from the prompt is an induction skill that a decoder trained from
    # scratch acquires abruptly after a few hundred steps of nothing else; mixed into image data
    # at the share the mixture can afford it does not appear within the budget at all. The
    # drills are about as long as captions, so a text step costs nearly an image step: shorter
    # drills are the cheapest cut in the build's time.
    text_steps: int = 0
    # Text-only rows added to every image step (a second, cheap forward): copy practice that
    # continues while the decoder learns to read the image, instead of only before it.
    text_mix: int = 0
    # Rows per text-only step (0: ``batch_size``). Smaller text batches are cheaper but leave
    # the copy skill weaker.
    text_batch_size: int = 0
    # "auto": bf16 autocast where the CPU has native bf16 matmuls (see devices.cpu_bf16), else fp32
    cpu_precision: str = "auto"


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)  # mean loss per logged window
    seconds: float = 0.0


@torch.no_grad()
def encode_images(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    *,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    bf16: bool = False,
    desc: str = "encoding images",
    progress: bool = True,
) -> torch.Tensor:
    """Frozen-tower features ``[N, tokens, hidden]`` for PIL images, via the processor's pixels.

    The result is filled in place, batch by batch, in ``dtype``, so the features are held once
    rather than as an fp32 list, an fp32 copy and a half copy. ``bf16`` runs the tower under CPU
    bf16 autocast, much faster where the CPU has native bf16 matmuls; its small relative error
    is absorbed by pretraining like a little noise on its inputs.
    """
    tower = model.model.vision_tower
    out: torch.Tensor | None = None
    for i in tqdm(
        range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=not progress
    ):
        pix = processor.image_processor(images=list(images[i : i + batch_size]), return_tensors="pt")[
            "pixel_values"
        ]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feats = tower(pix).last_hidden_state
        if out is None:
            out = torch.empty((len(images), *feats.shape[1:]), dtype=dtype)
        out[i : i + len(feats)] = feats.to(dtype)
    return out if out is not None else torch.empty(0)


def tokenize_triples(
    tokenizer: Any, triples: Sequence[Triple], *, image_tokens: int, max_length: int, chunk: int = 4096
) -> list[tuple[np.ndarray, int] | None]:
    """Each triple -> (token ids, number of prompt tokens); the loss covers the rest.

    The prompt is the chat template's rendering with ``<image>`` expanded to the tower's token
    count (what ``LlavaProcessor`` does); the target is the answer plus the end-of-turn token.
    A triple whose ``image`` is negative is text-only (no image in the prompt). Ids are kept as
    int32 arrays and tokenised ``chunk`` triples at a time: the build's ~90k triples as Python
    int lists (and the tokenizer's whole-batch output) cost gigabytes of peak memory.
    """
    out: list[tuple[np.ndarray, int] | None] = []
    for lo in range(0, len(triples), chunk):
        part = triples[lo : lo + chunk]
        prompts = [
            render_prompt(t.question, image=t.image >= 0).replace(IMAGE_TOKEN, IMAGE_TOKEN * image_tokens)
            for t in part
        ]
        p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer([t.answer + IM_END for t in part], add_special_tokens=False)["input_ids"]
        for p, a in zip(p_ids, a_ids, strict=True):
            # A prompt that leaves no room for the answer cannot teach anything: dropped (None).
            keep = len(p) < max_length
            out.append((np.asarray((p + a)[:max_length], dtype=np.int32), len(p)) if keep else None)
    return out


def collate(
    rows: Sequence[tuple[Sequence[int], int]], pad_id: int, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the batch's longest, rounded up to ``multiple``; labels are -100 on prompt and padding."""
    width = round_up(max(len(ids) for ids, _ in rows), multiple)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(rows):
        row = torch.as_tensor(ids, dtype=torch.long)
        ids_t[r, : len(row)] = row
        attn[r, : len(row)] = 1
        labels[r, n_prompt : len(row)] = row[n_prompt:]
    return ids_t, attn, labels


def vlm_loss(
    model: Any,
    feats: torch.Tensor,
    ids: torch.Tensor,
    attn: torch.Tensor,
    labels: torch.Tensor,
    *,
    image: torch.Tensor | None = None,
    multiple: int = 1,
) -> torch.Tensor:
    """Next-token loss of a LLaVA model given cached tower features (or projected ``image``)."""
    embed = model.get_input_embeddings()(ids)
    if image is None:
        image = model.model.multi_modal_projector(feats.to(embed.dtype))
    mask = (ids == model.config.image_token_id).unsqueeze(-1)
    # under bf16 autocast the projector's output is bf16 while the embedding lookup stays fp32
    return _answer_loss(model, embed.masked_scatter(mask, image.to(embed.dtype)), attn, labels, multiple)


def _answer_loss(
    model: Any, embed: torch.Tensor, attn: torch.Tensor, labels: torch.Tensor, multiple: int = 1
) -> torch.Tensor:
    """Next-token cross-entropy of the decoder on ``labels`` (-100 = no target) from input embeddings.

    The vocabulary projection runs only where there is a target; their count is rounded up to
    ``multiple`` with ignored rows, so that under bf16 autocast the projection sees a few shapes,
    not a new one every batch (see ``devices.PAD_MULTIPLE_BF16``).
    """
    hidden = model.model.language_model(inputs_embeds=embed, attention_mask=attn).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    rows, wanted = hidden[:, :-1][keep], target[keep]
    extra = round_up(len(rows), multiple) - len(rows)
    if extra:
        rows = F.pad(rows, (0, 0, 0, extra))
        wanted = F.pad(wanted, (0, extra), value=-100)
    return F.cross_entropy(model.lm_head(rows).float(), wanted, ignore_index=-100)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: shuffled, then length-sorted inside windows of 32 batches.

    Examples of similar length share a batch (padding is wasted compute on 2 cores), the batch
    order is shuffled again, and everything depends only on ``(seed, epoch)`` so a resumed run
    sees the same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * 32
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window].tolist(), key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def _lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """Projector and decoder (the tied LM head comes with the embeddings); never the tower."""
    model.model.vision_tower.requires_grad_(False)
    params = list(model.model.multi_modal_projector.parameters()) + list(
        model.model.language_model.parameters()
    )
    for p in params:
        p.requires_grad_(True)
    return params


def _save_checkpoint(
    path: Path,
    model: Any,
    probe: PartProbe | None,
    opt: torch.optim.Optimizer,
    step: int,
    losses: list[float],
) -> None:
    state = {
        "step": step,
        "losses": losses,
        "model": {k: v for k, v in model.state_dict().items() if not k.startswith("model.vision_tower.")},
        "probe": probe.state_dict() if probe is not None else None,
        "optimizer": opt.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def pretrain(
    model: Any,
    tokenizer: Any,
    feats: torch.Tensor,
    triples: Sequence[Triple],
    settings: TrainSettings,
    *,
    parts: PartTargets | None = None,
    text: Sequence[Triple] = (),
    checkpoint: str | Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train projector + decoder in place (resuming from ``checkpoint``).

    ``settings.text_steps`` steps on the text-only ``text`` examples come first, then
    ``settings.steps`` steps on ``triples``. With ``parts`` (per-image part values), an
    auxiliary ``PartProbe`` on the projector output joins the image-step loss with weight
    ``settings.part_loss``; it is discarded afterwards.
    """
    if not triples:
        raise ValueError("no training examples")
    image_tokens = int(feats.shape[1])
    encoded = tokenize_triples(tokenizer, triples, image_tokens=image_tokens, max_length=settings.max_length)
    keep = [i for i, r in enumerate(encoded) if r is not None]
    if not keep:
        raise ValueError(f"max_length={settings.max_length} is shorter than every prompt")
    if len(keep) < len(triples):
        logger.warning(
            "dropped %d of %d examples whose prompt fills max_length=%d",
            len(triples) - len(keep),
            len(triples),
            settings.max_length,
        )
    rows = [encoded[i] for i in keep]
    image_of = [triples[i].image for i in keep]
    n_text = settings.text_steps if text else 0
    mix = settings.text_mix if text else 0
    total = n_text + settings.steps
    text_rows = (
        [r for r in tokenize_triples(tokenizer, text, image_tokens=0, max_length=settings.max_length) if r]
        if n_text or mix
        else []
    )
    text_lr = dataclasses.replace(settings, steps=max(1, n_text), min_lr_ratio=1.0)
    params = trainable_parameters(model)
    probe = None
    if parts is not None and settings.part_loss > 0:
        probe = _make_probe(model, tokenizer, parts, settings.probe_readout)
        params = params + list(probe.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=(0.9, 0.98),
    )
    start, losses = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"], strict=False)
        if probe is not None and state.get("probe") is not None:
            probe.load_state_dict(state["probe"])
        opt.load_state_dict(state["optimizer"])
        start, losses = int(state["step"]), list(state["losses"])
        logger.info("resuming pretraining at step %d of %d", start, total)
    model.train()
    pad_id = tokenizer.pad_token_id
    t0 = time.time()
    window: list[float] = []
    image_stream = _Stream([len(ids) for ids, _ in rows], settings.batch_size, settings.seed)
    text_lengths = [len(ids) for ids, _ in text_rows]
    warm_stream = _Stream(text_lengths, settings.text_batch_size or settings.batch_size, settings.seed + 1)
    mix_stream = _Stream(text_lengths, max(1, mix), settings.seed + 2)
    bar = tqdm(
        range(start, total), desc="pretraining", unit="step", initial=start, total=total, disable=not progress
    )
    bf16 = next(model.parameters()).device.type == "cpu" and cpu_bf16(settings.cpu_precision)
    multiple = PAD_MULTIPLE_BF16 if bf16 else 1  # bounded oneDNN kernel cache (see devices.PAD_MULTIPLE_BF16)
    rows_multiple = 4 * multiple  # supervised tokens per batch, for the vocabulary projection
    for step in bar:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if step < n_text:
                lr = _lr_at(step, text_lr)
                loss = _text_loss(
                    model, [text_rows[i] for i in warm_stream.batch(step)], pad_id, multiple, rows_multiple
                )
            else:
                istep = step - n_text
                lr = _lr_at(istep, settings)
                pick = image_stream.batch(istep)
                ids, attn, labels = collate([rows[i] for i in pick], pad_id, multiple)
                images = [image_of[i] for i in pick]
                batch_feats = feats[images].float()  # features may be cached in half precision
                image = model.model.multi_modal_projector(batch_feats)
                loss = vlm_loss(model, batch_feats, ids, attn, labels, image=image, multiple=rows_multiple)
                if probe is not None:
                    loss = loss + settings.part_loss * probe.loss(image, parts.labels[images])
                if mix:
                    loss = loss + _text_loss(
                        model,
                        [text_rows[i] for i in mix_stream.batch(istep)],
                        pad_id,
                        multiple,
                        rows_multiple,
                    )
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        opt.step()
        value = float(loss.detach())
        window.append(value)
        if on_step is not None:
            on_step(step, value)
        if len(window) == 10 or step == total - 1:
            losses.append(sum(window) / len(window))
            window = []
            bar.set_postfix(loss=f"{losses[-1]:.3f}", phase="text" if step < n_text else "images")
        done = step + 1
        if ckpt is not None and done < total and done % settings.checkpoint_every == 0:
            _save_checkpoint(ckpt, model, probe, opt, done, losses)
    bar.close()
    model.eval()
    return TrainResult(steps=total, losses=losses, seconds=time.time() - t0)


def _make_probe(model: Any, tokenizer: Any, parts: PartTargets, readout: str) -> PartProbe:
    hidden = model.config.text_config.hidden_size
    if readout == "linear":
        return PartProbe(hidden, parts.classes)
    if readout != "words":
        raise ValueError(f"probe_readout={readout!r}: choose 'words' or 'linear'")
    if not parts.words:
        raise ValueError("probe_readout='words' needs PartTargets.words (the wording of each value)")
    tokens = [
        [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in values] for values in parts.words
    ]
    return PartProbe(hidden, parts.classes, value_tokens=tokens, embedding=model.get_input_embeddings())


class _Stream:
    """Length-bucketed batches over one list, epoch after epoch, addressed by step (resumable)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = max(1, math.ceil(len(lengths) / batch_size))
        self.epoch, self.batches = -1, []

    def batch(self, step: int) -> list[int]:
        if step // self.per_epoch != self.epoch:
            self.epoch = step // self.per_epoch
            self.batches = epoch_batches(self.lengths, self.batch_size, self.seed, self.epoch)
        return self.batches[step % self.per_epoch]


def _text_loss(
    model: Any,
    rows: Sequence[tuple[list[int], int]],
    pad_id: int,
    multiple: int = 1,
    rows_multiple: int = 1,
) -> torch.Tensor:
    """Answer-token loss of text-only rows through the decoder (no image); multiples as ``pretrain``."""
    ids, attn, labels = collate(rows, pad_id, multiple)
    return _answer_loss(model, model.get_input_embeddings()(ids), attn, labels, rows_multiple)
