"""``selfsynth run ... model.engine=vllm`` end to end on a micro world with the tiny LLaVA (real CLI process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RECIPE = str(Path(__file__).parents[2] / "configs" / "world.yaml")


def test_run_with_vllm_engine(hub_llava, tmp_path):
    from selfsynth.data.world import make_world

    world = tmp_path / "world"
    make_world(world, species=4, train_per_class=6, test_per_class=3, species_seed=0, image_seed=0, size=128)
    run_dir = tmp_path / "run"
    overrides = [
        f"data.root={world}",
        f"model.path={hub_llava}",
        "model.engine=vllm",
        "model.enforce_eager=true",
        "rounds=2",
        "chunk_size=4",
        "describe.prompts=2",
        "describe.samples=2",
        "describe.max_new_tokens=24",
        "synthesize.questions=2",
        "synthesize.fallback=label",  # a random model never names a label
        "synthesize.max_new_tokens=32",
        "synthesize.no_repeat_ngram=0",  # the repeat guard runs on HF; keep every generation on vLLM
        "sample.questions=1",
        "sample.samples=2",
        "sample.max_new_tokens=32",
        "sample.no_repeat_ngram=0",
        "finetune.epochs=1",
        "finetune.batch_size=8",
        "finetune.micro_batch_size=8",
        "finetune.lr=2e-3",
        "finetune.lora_r=8",
        "finetune.lora_alpha=16",
        "finetune.train_projector=false",  # so round 2 serves round 1's adapter as a LoRA request
        "evaluate.max_new_tokens=32",
        "evaluate.no_repeat_ngram=0",
        "evaluate.general_max=8",
    ]
    cmd = [
        sys.executable,
        "-m",
        "selfsynth",
        "run",
        RECIPE,
        *overrides,
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for stage in (
        "round_1/describe",
        "round_1/synthesize",
        "round_1/finetune",
        "round_1/evaluate",
        "round_2/sample",
        "round_2/finetune",
        "round_2/evaluate",
        "base/evaluate",
    ):
        assert (run_dir / stage / "_manifest.json").is_file(), stage
    assert "starting vLLM" in proc.stderr and "+ LoRA" in proc.stderr
    res = json.loads((run_dir / "results.json").read_text())
    assert [r["round"] for r in res["rounds"]] == [1, 2]
    assert (run_dir / "round_2" / "finetune" / "merged" / "selfsynth_merge.json").is_file()
