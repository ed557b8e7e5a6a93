"""Stage ``concepts``: label-level expert concepts Z_c per class, from a file, an LLM endpoint or a local LM."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from selfsynth.data.registry import get_capabilities
from selfsynth.io import file_digest, read_json, write_json
from selfsynth.runs import Stage, stage_fp
from selfsynth.stages.context import Context

log = logging.getLogger(__name__)


def default_bank_path(ctx: Context) -> str:
    """The dataset's own concept bank when it ships one (the embedded world does)."""
    shipped = get_capabilities(ctx.cfg.data).concept_bank
    return shipped(ctx.cfg.data) if shipped else ""


def run_concepts(ctx: Context) -> tuple[dict[str, list[str]], str]:
    """Returns the bank ``{label: [concepts]}`` for the run's labels and the stage fingerprint."""
    cfg = ctx.cfg.concepts
    path = cfg.path or default_bank_path(ctx)
    # The file's content, not only its name: an edited concept file must redo the stage.
    content = file_digest(path) if path and Path(path).is_file() else ""
    fp = stage_fp({**asdict(cfg), "path": path, "content": content}, *ctx.labels)
    stage = Stage(ctx.run_dir, "concepts", fp)
    out = stage.dir / "concepts.json"
    if stage.done() and out.is_file():
        return read_json(out), fp
    stage.begin()
    from selfsynth.data.concept_bank import validate_concept_bank
    from selfsynth.experts import make_source

    source = make_source(cfg, ctx.cache_dir / "expert.sqlite", default_path=path)
    bank = source.concepts(list(ctx.labels), progress=ctx.progress)
    bank = {lab: bank[lab] for lab in ctx.labels if lab in bank}
    validate_concept_bank(bank, ctx.labels, min_concepts=cfg.min_concepts, source=path or cfg.source)
    write_json(out, bank)
    stage.finish(classes=len(bank), concepts=sum(len(v) for v in bank.values()), source=cfg.source)
    return bank, fp
