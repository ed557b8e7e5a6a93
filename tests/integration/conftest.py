"""Shared micro world and micro base model for the end-to-end tests (built once per test session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

RECIPE = str(Path(__file__).parents[2] / "configs" / "world.yaml")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Small enough to build in well under a minute on 2 cores. Too small to copy a given label
# reliably, so the micro runs use synthesize.fallback=label; the embedded default does not.
MICRO_BASE = dict(
    species=4,
    train_per_class=12,
    text_steps=40,
    steps=80,
    hidden_size=96,
    layers=2,
    heads=4,
    intermediate_size=256,
    vocab_size=1024,
    concept_seeds=2,
    batch_size=16,
    lr=3e-3,
    checkpoint_every=40,
)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    from selfsynth.data.world import make_world

    out = tmp_path_factory.mktemp("micro") / "world"
    make_world(out, species=4, train_per_class=6, test_per_class=3, species_seed=0, image_seed=0, size=128)
    return out


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory):
    from selfsynth.basevlm.build import ensure_base_model

    return ensure_base_model(cache_dir=tmp_path_factory.mktemp("base-cache"), **MICRO_BASE)


@pytest.fixture(scope="session")
def micro_overrides(micro_world, micro_base) -> list[str]:
    """A 2-round run that exercises every stage with a few generations each."""
    world, base = micro_world, micro_base
    return [
        f"data.root={world}",
        f"model.path={base}",
        "rounds=2",
        "chunk_size=4",
        "describe.prompts=2",
        "describe.samples=2",
        "describe.max_new_tokens=24",
        "synthesize.questions=2",
        "synthesize.fallback=label",  # the micro base model is too small to copy labels reliably
        "synthesize.max_new_tokens=32",
        "sample.questions=1",
        "sample.samples=2",
        "sample.max_new_tokens=32",
        "finetune.epochs=1",
        "finetune.batch_size=8",
        "finetune.micro_batch_size=4",  # 2 accumulation steps here, 1 per rank under a 2-process launch
        "finetune.lr=2e-3",
        "evaluate.max_new_tokens=32",
    ]


@pytest.fixture(scope="session")
def finished_run(micro_overrides, tmp_path_factory):
    """The micro loop run once in this process: the reference that resume and launcher runs must match."""
    from selfsynth.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "full"
    argv = ["run", RECIPE, *micro_overrides, "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 0
    return run_dir
