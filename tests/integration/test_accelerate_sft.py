"""LoRA SFT under ``accelerate launch`` with 2 CPU processes matches 1 process at the same global batch.

Note: in accelerate 1.15, ``accelerate launch --cpu --num_processes 2`` starts ONE process unless an
MPI hostfile is given (its CPU path is the "simple" launcher). ``--multi_gpu`` with CUDA hidden
starts 2 processes through ``torch.distributed.run`` and they talk over gloo on the CPU, which is
what this test needs; the summary's ``processes`` field proves there were two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from tiny_models import build_llava, make_images  # noqa: E402

OVERRIDES = [
    "lora_r=4",
    "lora_alpha=8",
    "lora_dropout=0.0",
    "lr=1e-2",
    "epochs=2",
    "batch_size=8",
    "micro_batch_size=2",
    "augment=false",
    "warmup_ratio=0.1",
]
TOLERANCE = 1e-3  # relative, per step; measured differences are ~1e-7 (float summation order)


def _env() -> dict[str, str]:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


def _run(cmd: list[str]) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, res.stdout  # only rank 0 prints
    return json.loads(lines[0])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    model = build_llava(tmp_path / "llava")
    make_images(tmp_path / "images", 8)
    answers = ["a red finch", "a blue robin", "a small brown sparrow with wing bars"]
    with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
        for i in range(16):
            f.write(
                json.dumps(
                    {
                        "id": str(i),
                        "image": f"images/img{i % 8}.png",
                        "question": "what bird is this ?",
                        "answer": answers[i % 3],
                        "label": "x",
                    }
                )
                + "\n"
            )
    args = [str(model), str(tmp_path / "train.jsonl")]
    one = _run([sys.executable, "-m", "selfsynth.commands.sft", *args, str(tmp_path / "one"), *OVERRIDES])
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "selfsynth",
        "-q",
        "sft",
    ]
    two = _run([*accelerate, *args, str(tmp_path / "two"), *OVERRIDES])
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["global_batch"] == two["global_batch"] == 8 and one["steps"] == two["steps"] == 4
    loss = {
        k: [json.loads(x)["loss"] for x in (tmp_path / k / "train_log.jsonl").read_text().splitlines()]
        for k in ("one", "two")
    }
    assert len(loss["two"]) == 4  # rank 0 alone writes the log
    assert np.allclose(loss["one"], loss["two"], rtol=TOLERANCE, atol=0)
    assert loss["one"][-1] < loss["one"][0]
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()
