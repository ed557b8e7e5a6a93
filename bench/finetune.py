"""Benchmark one LoRA SFT step: dropout on / off, fp32 vs bf16 autocast, full logits vs the answer span.

On CPU, peft's dropout draws a fresh mask for the input of every adapted linear layer, and a
causal-LM loss that projects every position onto the vocabulary spends that work on the prompt
(image tokens included) only to ignore it. The script times real ``train_lora`` steps with
``lora_dropout`` 0.05 and 0.0, and the loss forward + backward with full logits vs
``token_loss`` (logits from the batch's first supervised position on), and prints the ratios.
It also times fp32 steps against bf16 autocast (``finetune.cpu_precision``), which pays on CPUs
with native bf16 matmuls (AVX512-BF16 / AMX) and is left out elsewhere, and peft's two thin LoRA
matmuls against one matmul with ``W + s B A`` (``finetune.lora_forward``), which pays when the
rank is large for the layer width (the world's 192-wide base at r 128).

With ``--data`` (a round's ``finetune/train.jsonl``: answers of mixed lengths) it times, instead,
batches grouped by length (``finetune.group_by_length``) against plain random batches, and prints
the share of padding in each.

    .venv/bin/python bench/finetune.py                 # a random tiny LLaVA (144 image tokens)
    .venv/bin/python bench/finetune.py --model DIR     # any local image-text-to-text model
    .venv/bin/python bench/finetune.py --model BASE --data RUN/round_2/finetune/train.jsonl
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests", "unit"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_models import build_llava, make_images  # noqa: E402

from selfsynth.config import FinetuneConfig  # noqa: E402
from selfsynth.models.chat import IGNORE, open_image  # noqa: E402
from selfsynth.models.devices import cpu_bf16  # noqa: E402
from selfsynth.models.sft import batch_for, token_loss  # noqa: E402
from selfsynth.models.vlm import VLM  # noqa: E402
from selfsynth.records import QA  # noqa: E402

ANSWER = "this bird has a red crown , a black beak and white wing bars , so it is a cardinal ."


def full_logits_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The plain causal-LM loss: every position projected onto the vocabulary."""
    inputs = {k: v for k, v in batch.items() if k != "labels" and torch.is_tensor(v)}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)


def time_loss(vlm: VLM, batch: dict[str, torch.Tensor], repeats: int, full: bool) -> float:
    """Best seconds of one loss forward + backward over ``repeats`` tries."""
    best = float("inf")
    for _ in range(repeats):
        vlm.model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        if full:
            loss = full_logits_loss(vlm.model, batch)
        else:
            total, count = token_loss(vlm.model, batch, vlm.device)
            loss = total / max(count, 1)
        loss.backward()
        best = min(best, time.perf_counter() - t)
    return best


def time_steps(
    path: str, examples: list[QA], cfg: FinetuneConfig, steps: int, cache_dir: str | None = None
) -> float:
    """Seconds per ``train_lora`` step; a one-step run first warms torch up.

    Each timed run loads the model afresh, so its first pass over the images fills the feature
    cache: both dropout settings pay that alike.
    """
    vlm = VLM.load(path, feature_cache=True, feature_cache_dir=cache_dir)
    with tempfile.TemporaryDirectory() as out:
        vlm.train_lora(examples, cfg, out, progress=False, max_steps=1, checkpoint_every=0)
    vlm = VLM.load(path, feature_cache=True, feature_cache_dir=cache_dir)
    with tempfile.TemporaryDirectory() as out:
        summary = vlm.train_lora(examples, cfg, out, progress=False, max_steps=steps, checkpoint_every=0)
    return summary["seconds"] / max(1, summary["steps"])


def padding_share(vlm: VLM, examples: list[QA], cfg: FinetuneConfig, steps: int) -> float:
    """Share of the padded batch positions that are padding, over ``steps`` steps of the stream."""
    from selfsynth.models.sft import _plan, _stream, example_lengths

    n_steps, _, global_batch = _plan(len(examples), cfg, 1, cfg.micro_batch_size)
    lengths = example_lengths(examples) if cfg.group_by_length else None
    order = _stream(len(examples), min(steps, n_steps), global_batch, 0, lengths)
    blank = Image.new("RGB", (64, 64))
    tokens = []
    for e in examples:
        b = batch_for(vlm, [blank], [e.question], [e.answer])
        tokens.append(int(b["input_ids"].shape[1]))
    used = padded = 0
    for lo in range(0, len(order), global_batch):
        chunk = [tokens[i] for i in order[lo : lo + global_batch]]
        used += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - used / padded


def grouping(path: str, data: str, steps: int, cfg: FinetuneConfig) -> None:
    """Grouped vs random batches on real training data: seconds per step and padding share."""
    import json

    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines() if line]
    examples = [QA(r["id"], r["image"], r["question"], r["answer"], r.get("label", "")) for r in rows]
    cfg = dataclasses.replace(cfg, epochs=4, lora_dropout=0.0, cpu_precision="auto")
    with tempfile.TemporaryDirectory() as cache:
        # encode every image once into an on-disk feature cache, so neither timing pays the tower
        vlm = VLM.load(path, feature_cache=True, feature_cache_dir=cache)
        distinct = sorted({e.image for e in examples})
        vlm.generate(distinct, ["Describe the image."] * len(distinct), max_new_tokens=1, batch_size=64)
        results = {}
        for grouped in (False, True):
            run = dataclasses.replace(cfg, group_by_length=grouped)
            timed = time_steps(path, examples, run, steps, cache)
            results[grouped] = (timed, padding_share(vlm, examples, run, steps))
    (plain, plain_pad), (grp, grp_pad) = results[False], results[True]
    print(
        f"{len(examples)} examples, batch {cfg.batch_size}, {steps} steps: random batches {plain:.3f} s/step "
        f"({plain_pad:.0%} padding), grouped by length {grp:.3f} s/step ({grp_pad:.0%} padding), "
        f"ratio {plain / grp:.2f}x"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: a random tiny LLaVA built in a temp dir)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=128, help="LoRA rank (alpha = 2 x rank)")
    ap.add_argument("--data", help="a train.jsonl of a run: also time length-grouped vs random batches")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.data:
        if not args.model:
            ap.error("--data needs --model (the model the data was made for)")
        grouping(
            args.model,
            args.data,
            args.steps,
            FinetuneConfig(batch_size=args.batch, micro_batch_size=args.batch),
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or str(build_llava(Path(tmp) / "llava", image_size=96, patch_size=8))
        images = make_images(Path(tmp) / "images", args.images, size=96)
        examples = [
            QA(f"e{i}", str(p), "what is the name of this bird ? explain why .", ANSWER, "cardinal")
            for i, p in enumerate(images)
        ]
        cfg = FinetuneConfig(
            batch_size=args.batch,
            micro_batch_size=args.batch,
            epochs=100,
            augment=False,
            cpu_precision="fp32",
            lora_r=args.rank,
            lora_alpha=2 * args.rank,
            lora_forward="factored",  # the dropout and precision ratios compare peft's path
        )
        with_dropout = time_steps(path, examples, dataclasses.replace(cfg, lora_dropout=0.05), args.steps)
        without = time_steps(path, examples, dataclasses.replace(cfg, lora_dropout=0.0), args.steps)
        merged = time_steps(
            path, examples, dataclasses.replace(cfg, lora_dropout=0.0, lora_forward="dense"), args.steps
        )
        bf16 = bf16_merged = None
        if cpu_bf16("auto"):
            bf16 = time_steps(
                path, examples, dataclasses.replace(cfg, lora_dropout=0.0, cpu_precision="bf16"), args.steps
            )
            bf16_merged = time_steps(
                path,
                examples,
                dataclasses.replace(cfg, lora_dropout=0.0, cpu_precision="bf16", lora_forward="dense"),
                args.steps,
            )

        vlm = VLM.load(path)
        vlm.model.train()
        chunk = examples[: args.batch]
        batch = batch_for(
            vlm, [open_image(e.image) for e in chunk], [e.question for e in chunk], [e.answer for e in chunk]
        )
        prompt = int((batch["labels"][0] == IGNORE).sum())
        full = time_loss(vlm, batch, args.repeats, full=True)
        span = time_loss(vlm, batch, args.repeats, full=False)
    print(
        f"LoRA step, batch {args.batch}: dropout 0.05 {with_dropout:.3f} s, dropout 0 {without:.3f} s, "
        f"ratio {with_dropout / without:.2f}x"
    )
    print(
        f"LoRA step, dropout 0, r {args.rank}: peft's two matmuls {without:.3f} s, one merged matmul "
        f"{merged:.3f} s, ratio {without / merged:.2f}x"
    )
    if bf16 is None:
        print("bf16 autocast: this CPU has no native bf16 matmuls; not timed")
    else:
        print(
            f"LoRA step, dropout 0: fp32 {without:.3f} s, bf16 autocast {bf16:.3f} s, ratio {without / bf16:.2f}x"
        )
        print(
            f"LoRA step, dropout 0, bf16 autocast, r {args.rank}: peft's two matmuls {bf16:.3f} s, "
            f"one merged matmul {bf16_merged:.3f} s, ratio {bf16 / bf16_merged:.2f}x"
        )
    print(
        f"loss fwd+bwd, {batch['input_ids'].shape[1]} tokens ({prompt} not supervised): full logits "
        f"{full:.3f} s, answer span {span:.3f} s, ratio {full / span:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
