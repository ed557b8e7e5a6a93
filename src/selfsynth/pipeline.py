"""The round loop: which stage runs when, in what order, and what is skipped on resume.

    concepts -> describe (base) -> select Z* -> evaluate base
    round 1:  synthesize (base, label + Z*) -> finetune (base) -> evaluate
    round r:  sample (model r-1, contrastive rejection) -> finetune (model r-1) -> evaluate

Baselines ``nl`` and ``lge`` are single-round methods (the paper reports one number for each);
``nofilter`` runs every round without the contrastive selection. Every stage is skipped when its
manifest matches, so ``--resume`` after a kill picks up exactly where the run stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from selfsynth.config import RunConfig, to_dict
from selfsynth.distributed import is_main, main_first, sharded, together
from selfsynth.io import file_digest, fingerprint, write_json
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)
METHODS = ("ours", "nl", "lge", "nofilter")  # the choices of ``method``


def rounds_for(cfg: RunConfig) -> int:
    return 1 if cfg.method in ("nl", "lge") else cfg.rounds


def load_context(cfg: RunConfig, run_dir: Path, progress: bool = True) -> Context:
    from selfsynth.data import class_names
    from selfsynth.data.loaders import load_split

    loaded = {split: load_split(cfg.data, split) for split in ("train", "test")}
    train, test = loaded["train"].examples, loaded["test"].examples
    skipped = [{"split": split, **s.to_dict()} for split, r in loaded.items() for s in r.skipped]
    labels = class_names(train + test)
    unknown = sorted({e.label for e in test} - {e.label for e in train})
    if unknown:
        log.warning("test labels never seen in training: %s", ", ".join(unknown[:5]))
    return Context(
        cfg=cfg, run_dir=run_dir, train=train, test=test, labels=labels, progress=progress, skipped=skipped
    )


def run(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole loop; returns the results also written to ``run_dir/results.json``."""
    from selfsynth.stages.concepts import run_concepts
    from selfsynth.stages.describe import run_describe
    from selfsynth.stages.evaluate import run_evaluate
    from selfsynth.stages.finetune import run_finetune
    from selfsynth.stages.sample import run_sample
    from selfsynth.stages.select import run_select
    from selfsynth.stages.synthesize import run_synthesize

    t0 = time.time()
    run_dir = Path(run_dir)
    ctx = load_context(cfg, run_dir, progress)
    base = cfg.model.path
    base_fp = fingerprint([str(Path(base).resolve()), _model_stamp(base)])
    data_fp = fingerprint([[e.id, e.label, e.image] for e in ctx.train])
    # Chunk boundaries decide each chunk's seed, so part files hold other rows under another size.
    chunk_fp = fingerprint({"chunk_size": cfg.chunk_size})
    log.info(
        "run %s: method=%s, %d train / %d test images, %d classes, %d rounds",
        cfg.name,
        cfg.method,
        len(ctx.train),
        len(ctx.test),
        len(ctx.labels),
        rounds_for(cfg),
    )

    results: dict[str, Any] = {"name": cfg.name, "method": cfg.method, "config": to_dict(cfg), "rounds": []}
    if ctx.skipped:  # every bad image or record data.skip_bad left out, for the report
        results["data_skipped"] = ctx.skipped
    bank, concepts_fp = main_first(run_concepts, ctx)
    results["base"] = sharded(run_evaluate, ctx, "base", base, bank, base_fp, concepts_fp, chunk_fp)
    _save(run_dir, results)

    selected: dict[str, list[str]] = {}
    select_fp = ""
    if cfg.method in ("ours", "nofilter"):  # nl needs no concepts, lge uses all of Z_c
        descriptions, describe_fp = sharded(run_describe, ctx, base, base_fp + data_fp + chunk_fp)
        selected, select_fp = main_first(run_select, ctx, bank, descriptions, concepts_fp, describe_fp)
    model, model_fp = base, base_fp
    first_pairs: list = []  # round 1's pairs: sample.fallback=synth falls back on them
    for rnd in range(1, rounds_for(cfg) + 1):
        if rnd == 1:
            pairs, data_stage_fp = sharded(
                run_synthesize, ctx, base, selected, bank, base_fp, data_fp, concepts_fp, select_fp, chunk_fp
            )
            first_pairs = pairs
        else:
            pairs, data_stage_fp = sharded(
                run_sample,
                ctx,
                rnd,
                model,
                selected,
                bank,
                model_fp,
                concepts_fp,
                select_fp,
                chunk_fp,
                first_round=first_pairs,
            )
        ctx.release_vlm()
        model, model_fp = together(run_finetune, ctx, rnd, model, pairs, data_stage_fp, model_fp)
        metrics = sharded(run_evaluate, ctx, f"round_{rnd}", model, bank, model_fp, concepts_fp, chunk_fp)
        metrics["train_pairs"] = len(pairs)
        results["rounds"].append({"round": rnd, **metrics})
        results["final_model"] = model
        _save(run_dir, results)
    ctx.release_vlm()
    results["seconds"] = round(time.time() - t0, 1)
    _save(run_dir, results)
    if is_main():
        from selfsynth.report import write_report

        write_report(run_dir)
    return results


DIGEST_LIMIT = 64 << 20  # files up to this size are hashed; larger ones (weights) are stamped


def _model_stamp(path: str) -> str:
    """Identity of a model directory's content: every file, at any depth, by path and content.

    Files up to ``DIGEST_LIMIT`` count by their SHA-256; larger ones by size and ``mtime_ns``,
    because hashing a 7B model's weights on every start costs minutes, and any rewrite of a file
    (retrained weights of the same shapes included) moves its mtime.
    """
    p = Path(path)
    if not p.is_dir():
        return ""
    files = []
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        st = f.stat()
        ident = file_digest(f) if st.st_size <= DIGEST_LIMIT else f"{st.st_size}:{st.st_mtime_ns}"
        files.append((rel.as_posix(), ident))
    return fingerprint(files)


def _save(run_dir: Path, results: dict[str, Any]) -> None:
    if not is_main():  # every rank holds the same results; one writes them
        return
    write_json(run_dir / "results.json", json.loads(json.dumps(results, default=str)))
