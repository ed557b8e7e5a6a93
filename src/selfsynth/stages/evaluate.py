"""Stage ``evaluate``: the model's greedy answer to the dataset's first explain question on the test split.

Run for the base model and after every round. Per-sample answers go to ``samples.jsonl`` so any
metric can be recomputed without the model; ``metrics.json`` holds the summary. On the embedded
world it also scores the generic multiple-choice VQA (general ability before/after tuning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selfsynth.io import iter_jsonl, read_json, write_json, write_jsonl
from selfsynth.metrics.answers import answer_metrics, read_choice
from selfsynth.prompts import VQA_MAX_NEW_TOKENS, vqa_prompt
from selfsynth.records import Example
from selfsynth.runs import Stage, chunk_seed, stage_fp
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)


def test_subset(examples: Sequence[Example], cap: int) -> list[Example]:
    """A deterministic, class-balanced-ish cap: every k-th example of the id-sorted split."""
    items = sorted(examples, key=lambda e: e.id)
    if cap <= 0 or cap >= len(items):
        return items
    step = len(items) / cap
    return [items[int(i * step)] for i in range(cap)]


def _general_items(ctx: Context, test_images: set[str]) -> list[dict[str, Any]]:
    root = Path(ctx.cfg.data.root)
    if ctx.cfg.data.format != "world" or not (root / "vqa.jsonl").is_file():
        return []
    return [r for _, r in iter_jsonl(root / "vqa.jsonl") if str((root / r["image"]).resolve()) in test_images]


def run_evaluate(
    ctx: Context, name: str, model_path: str, bank: dict[str, list[str]], *inputs_fp: str
) -> dict[str, Any]:
    """Evaluate ``model_path``; ``name`` is ``base`` or ``round_<r>``. Returns the metrics."""
    cfg = ctx.cfg.evaluate
    test = test_subset(ctx.test, cfg.max_test)
    question = ctx.pools.eval_question
    fp = stage_fp({**asdict(cfg), "question": question}, model_path, *inputs_fp, *[e.id for e in test])
    stage = Stage(ctx.run_dir, f"{name}/evaluate", fp)
    if stage.done():
        return read_json(stage.dir / "metrics.json")
    stage.begin()

    def work(c: int, chunk: Sequence[Example]) -> list[dict[str, Any]]:
        outs = ctx.vlm(model_path).generate(
            [e.image for e in chunk],
            [question] * len(chunk),
            n=1,
            temperature=0.0,
            max_new_tokens=cfg.max_new_tokens,
            seed=chunk_seed(ctx.cfg.seed, "evaluate", c),
            batch_size=cfg.batch_size,
            no_repeat_ngram=cfg.no_repeat_ngram,
            allow_repeats=ctx.labels,
        )
        return [
            {
                "id": e.id,
                "image": e.image,
                "label": e.label,
                "question": question,
                "answer": o[0].strip(),
                "visible_concepts": e.meta.get("visible_concepts"),
            }
            for e, o in zip(chunk, outs, strict=True)
        ]

    rows = stage.chunks(test, ctx.cfg.chunk_size, work, desc=f"evaluate {name}", progress=ctx.progress)
    metrics: dict[str, Any] = {"name": name, "model": model_path, "question": question}
    metrics.update(
        answer_metrics(
            rows,
            labels=ctx.labels,
            bank=bank,
            encoder=ctx.encoder(),
            fluency=ctx.fluency() if cfg.fluency else None,
            grounding=ctx.cfg.data.format == "world",
        )
    )
    if cfg.general:
        items = _general_items(ctx, {str(Path(e.image).resolve()) for e in test})
        if 0 < cfg.general_max < len(items):
            step = len(items) / cfg.general_max
            items = [items[int(i * step)] for i in range(cfg.general_max)]
        if items:
            outs = ctx.vlm(model_path).generate(
                [str(Path(ctx.cfg.data.root) / r["image"]) for r in items],
                [vqa_prompt(r["question"], r["options"]) for r in items],
                n=1,
                temperature=0.0,
                max_new_tokens=VQA_MAX_NEW_TOKENS,
                batch_size=cfg.batch_size,
            )
            correct = [
                read_choice(o[0], r["options"]) == r["answer"] for o, r in zip(outs, items, strict=True)
            ]
            metrics["general_vqa"] = sum(correct) / len(correct)
            metrics["general_n"] = len(correct)
    write_jsonl(stage.dir / "samples.jsonl", rows)
    write_json(stage.dir / "metrics.json", metrics)
    stage.finish(samples=len(rows))
    log.info(
        "%s: substring acc %.3f, strict acc %.3f (n=%d)",
        name,
        metrics["acc_substring"],
        metrics["acc_strict"],
        metrics["n"],
    )
    return metrics
