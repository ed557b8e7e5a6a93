"""Stage ``evaluate``: the model's greedy answer to the dataset's first explain question on the test split.

Run for the base model and after every round. Per-sample answers go to ``samples.jsonl`` so any
metric can be recomputed without the model; ``metrics.json`` holds the summary. Where the dataset
offers general multiple-choice VQA (the embedded world does) it also scores that (general
ability before/after tuning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selfsynth.data.registry import get_capabilities
from selfsynth.io import read_json, write_json, write_jsonl
from selfsynth.metrics.answers import answer_metrics
from selfsynth.metrics.choice import answer_choices, choice_accuracy
from selfsynth.metrics.judge import make_judge
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
    items = get_capabilities(ctx.cfg.data).general_vqa
    if items is None:
        return []
    return [r for r in items(ctx.cfg.data) if str(Path(r["image"]).resolve()) in test_images]


def run_evaluate(
    ctx: Context, name: str, model_path: str, bank: dict[str, list[str]], *inputs_fp: str
) -> dict[str, Any]:
    """Evaluate ``model_path``; ``name`` is ``base`` or ``round_<r>``. Returns the metrics."""
    cfg = ctx.cfg.evaluate
    offers = get_capabilities(ctx.cfg.data)
    test = test_subset(ctx.test, cfg.max_test)
    question = ctx.pools.eval_question
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("judge", "judge_api", "split")}
    if cfg.split != "test":  # only then: test evaluations keep the fingerprint they had before splits
        settings["split"] = cfg.split
    if cfg.judge:  # only then: runs without the judge keep the fingerprint they had before it existed
        api = cfg.judge_api
        settings["judge"] = {"base_url": api.base_url, "model": api.model, "temperature": api.temperature}
    fp = stage_fp({**settings, "question": question}, model_path, *inputs_fp, *[e.id for e in test])
    stage = Stage(ctx.run_dir, f"{name}/evaluate", fp)
    if stage.done():
        return read_json(stage.dir / "metrics.json")
    stage.begin()
    judge = make_judge(cfg, ctx.cache_dir)  # None when off; built first so a bad setting fails fast

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
            grounding=offers.visibility,
            citer=offers.citer,
            judge=judge,
        )
    )
    if judge is not None:
        judge.close()
    if cfg.general:
        items = _general_items(ctx, {str(Path(e.image).resolve()) for e in test})
        if 0 < cfg.general_max < len(items):
            step = len(items) / cfg.general_max
            items = [items[int(i * step)] for i in range(cfg.general_max)]
        if items:
            choices = answer_choices(
                ctx.vlm(model_path),
                items,
                image_for=lambda r: r["image"],
                prompt_for=lambda r: vqa_prompt(r["question"], r["options"]),
                batch_size=cfg.batch_size,
                max_new_tokens=VQA_MAX_NEW_TOKENS,
            )
            metrics["general_vqa"] = choice_accuracy([c.correct for c in choices])
            metrics["general_n"] = len(choices)
    write_jsonl(stage.dir / "samples.jsonl", rows)
    write_json(stage.dir / "metrics.json", metrics)
    if name != "base":  # a round's own merged model, never the user's base folder
        from selfsynth.models.merge import ship_decoding

        ship_decoding(model_path, max_new_tokens=cfg.max_new_tokens, no_repeat_ngram=cfg.no_repeat_ngram)
    stage.finish(samples=len(rows))
    log.info(
        "%s: substring acc %.3f, strict acc %.3f (n=%d)",
        name,
        metrics["acc_substring"],
        metrics["acc_strict"],
        metrics["n"],
    )
    return metrics
