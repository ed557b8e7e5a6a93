"""The round loop: which stage runs when, in what order, and what is skipped on resume.

    concepts -> describe (base) -> select Z* -> evaluate base
    round 1:  synthesize (base, label + Z*) -> finetune (base) -> evaluate
    round r:  sample (model r-1, contrastive rejection) -> finetune (model r-1) -> evaluate

Baselines ``nl`` and ``lge`` are single-round methods (the paper reports one number for each);
``nofilter`` runs every round without the contrastive selection. Every stage is skipped when its
manifest matches, so ``--resume`` after a kill picks up exactly where the run stopped.
Each round's merged model gets a model card (``report.model_card``); ``tracking.report_to``
sends training curves, metrics and sample answers to experiment trackers (``selfsynth.tracking``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsynth.config import RunConfig, setting, to_dict
from selfsynth.distributed import is_main, main_first, sharded, together
from selfsynth.io import file_digest, fingerprint, write_json
from selfsynth.runs import used_stage_seconds
from selfsynth.stages.context import Context

if TYPE_CHECKING:
    from selfsynth.tracking.run_tracker import RunTracker

log = logging.getLogger(__name__)
METHODS = ("ours", "nl", "lge", "nofilter")  # the choices of ``method``


def rounds_for(cfg: RunConfig) -> int:
    return 1 if cfg.method in ("nl", "lge") else cfg.rounds


def load_context(cfg: RunConfig, run_dir: Path, progress: bool = True) -> Context:
    from selfsynth.data import class_names
    from selfsynth.data.loaders import load_split

    # The evaluated split: test, or validation while settings are being chosen (evaluate.split).
    held_out = cfg.evaluate.split
    loaded = {split: load_split(cfg.data, split) for split in ("train", held_out)}
    train, test = loaded["train"].examples, loaded[held_out].examples
    skipped = [{"split": split, **s.to_dict()} for split, r in loaded.items() for s in r.skipped]
    labels = class_names(train + test)
    unknown = sorted({e.label for e in test} - {e.label for e in train})
    if unknown:
        log.warning("%s labels never seen in training: %s", held_out, ", ".join(unknown[:5]))
    return Context(
        cfg=cfg, run_dir=run_dir, train=train, test=test, labels=labels, progress=progress, skipped=skipped
    )


def run(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole loop; returns the results also written to ``run_dir/results.json``."""
    from selfsynth.tracking import open_run_tracker

    cfg = pin_cpu_precisions(cfg, Path(run_dir))
    tracker = open_run_tracker(cfg, run_dir)
    failed = True
    try:
        results = _loop(cfg, Path(run_dir), tracker, progress)
        failed = False
        return results
    finally:
        tracker.close(failed)


# Each CPU precision setting and the probe workload that decides its "auto".
_PRECISION_WORKLOADS = {
    "finetune.cpu_precision": "train",
    "model.encode_precision": "encode",
    "embed.precision": "embed",
}
PRECISION_FILE = "cpu_precision.json"


def pin_cpu_precisions(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """``cfg`` with each "auto" CPU precision replaced by the one this run has used from its start.

    "auto" is a measurement, and a machine's cached measurement can change between a kill and the
    resume (another thread count, a cleared cache, a different host); the run folder keeps the
    first choice so the resumed stages compute as the killed ones did.
    """
    import dataclasses

    from selfsynth.distributed import from_main
    from selfsynth.errors import ConfigError
    from selfsynth.io import read_json
    from selfsynth.models.devices import cpu_bf16, resolve_device

    auto = [k for k in _PRECISION_WORKLOADS if setting(cfg, k) == "auto"]
    if not auto or resolve_device(cfg.model.device).type != "cpu":
        return cfg
    pinned: dict[str, str] = {}
    if is_main():
        path = run_dir / PRECISION_FILE
        stored = read_json(path) if path.is_file() else {}
        if not isinstance(stored, dict) or any(v not in ("fp32", "bf16") for v in stored.values()):
            raise ConfigError(f"{path}: expected {{setting: fp32 | bf16}}; delete it to measure again")
        for key in auto:
            pinned[key] = stored.get(key) or (
                "bf16" if cpu_bf16("auto", _PRECISION_WORKLOADS[key]) else "fp32"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, {**stored, **pinned})
        log.info("CPU precisions of this run: %s", ", ".join(f"{k}={v}" for k, v in pinned.items()))
    for key, value in from_main(pinned).items():
        section, name = key.split(".")
        part = dataclasses.replace(getattr(cfg, section), **{name: value})
        cfg = dataclasses.replace(cfg, **{section: part})
    return cfg


def _loop(cfg: RunConfig, run_dir: Path, tracker: RunTracker, progress: bool) -> dict[str, Any]:
    from selfsynth.stages.concepts import run_concepts
    from selfsynth.stages.describe import run_describe
    from selfsynth.stages.evaluate import run_evaluate
    from selfsynth.stages.finetune import run_finetune
    from selfsynth.stages.sample import run_sample
    from selfsynth.stages.select import run_select
    from selfsynth.stages.synthesize import run_synthesize

    t0 = time.time()
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

    results: dict[str, Any] = {
        "name": cfg.name,
        "method": cfg.method,
        "evaluated_on": cfg.evaluate.split,
        "config": to_dict(cfg),
        "rounds": [],
    }
    if ctx.skipped:  # every bad image or record data.skip_bad left out, for the report
        results["data_skipped"] = ctx.skipped
    bank, concepts_fp = main_first(run_concepts, ctx)
    results["base"] = sharded(run_evaluate, ctx, "base", base, bank, base_fp, concepts_fp, chunk_fp)
    tracker.evaluated("base", 0, results["base"])
    _save(run_dir, results)

    selected: dict[str, list[str]] = {}
    select_fp = ""
    if cfg.method in ("ours", "nofilter"):  # nl needs no concepts, lge uses all of Z_c
        descriptions, describe_fp = sharded(run_describe, ctx, base, base_fp + data_fp + chunk_fp)
        selected, select_fp = main_first(run_select, ctx, bank, descriptions, concepts_fp, describe_fp)
    staged = _stage_grounding(ctx, bank, selected, results)
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
        model, model_fp = together(
            run_finetune, ctx, rnd, model, pairs, data_stage_fp, model_fp, on_step=tracker.train_logger(rnd)
        )
        tracker.finetune_done(rnd)
        _card(model, results, rnd)  # already now: the folder is a usable model from here on
        metrics = sharded(run_evaluate, ctx, f"round_{rnd}", model, bank, model_fp, concepts_fp, chunk_fp)
        metrics["train_pairs"] = len(pairs)
        if staged is not None:  # where hallucinated concepts enter: this round's training answers
            staged.fill(metrics, run_dir / f"round_{rnd}", "synthesize" if rnd == 1 else "sample", pairs)
        tracker.evaluated(f"round_{rnd}", rnd, metrics)
        results["rounds"].append({"round": rnd, **metrics})
        results["final_model"] = model
        _card(model, results, rnd)  # now with this round's metrics
        _save(run_dir, results)
    ctx.release_vlm()
    if cfg.rl.enabled:  # the optional GRPO round on the last round's model (stages/rl.py)
        from selfsynth.stages.rl import run_rl

        rl_model, rl_fp, rl_info = main_first(
            run_rl, ctx, model, selected, bank, model_fp, concepts_fp, select_fp
        )
        metrics = sharded(run_evaluate, ctx, "rl", rl_model, bank, rl_fp, concepts_fp, chunk_fp)
        tracker.evaluated("rl", rounds_for(cfg) + 1, metrics)
        results["rl"] = {**metrics, "training": rl_info}
        results["final_model"] = rl_model  # the round users enabled is the model they get
        _card(rl_model, results, rounds_for(cfg), rl=True)
        ctx.release_vlm()
        _save(run_dir, results)
    results["seconds"] = round(time.time() - t0, 1)  # this invocation
    # every stage's own run, the ones an earlier invocation finished included
    results["stage_seconds"] = round(used_stage_seconds(run_dir), 1)
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


def _card(model: str, results: dict[str, Any], rnd: int, rl: bool = False) -> None:
    """Write round ``rnd``'s model card (``rl``: the RL round's after it) into its merged folder, on the main rank."""
    if is_main():
        from selfsynth.report.model_card import write_model_card

        write_model_card(model, results, rnd, rl=rl)


def _stage_grounding(
    ctx: Context, bank: dict[str, list[str]], selected: dict[str, list[str]], results: dict[str, Any]
) -> Any:
    """Citation figures per stage (a ``metrics.stage_grounding.StageGrounding``, None off the main rank)."""
    if not is_main():
        return None
    from selfsynth.data.registry import get_capabilities
    from selfsynth.metrics.stage_grounding import StageGrounding

    offers = get_capabilities(ctx.cfg.data)
    staged = StageGrounding.of(bank, selected, ctx.train, visibility=offers.visibility, citer=offers.citer)
    if selected:
        results["zstar_grounding"] = staged.zstar()
    staged.fill(results["base"], ctx.run_dir / "base")
    return staged


def _save(run_dir: Path, results: dict[str, Any]) -> None:
    if not is_main():  # every rank holds the same results; one writes them
        return
    write_json(run_dir / "results.json", json.loads(json.dumps(results, default=str)))
