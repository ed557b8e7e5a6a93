"""The optional RL round through the real CLI on the micro world: it runs, reports, resumes and restarts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from selfsynth.cli import main

pytestmark = pytest.mark.slow
RECIPE = str(Path(__file__).parents[2] / "configs" / "world.yaml")
FAST = [  # one small round before it: the RL stage is what is under test
    "rounds=1",
    "data.max_train_per_class=2",
    "describe.prompts=1",
    "finetune.general_mix=0.5",
    "evaluate.max_test=4",
    "evaluate.general=false",
]
RL = [
    "rl.enabled=true",
    "rl.steps=2",
    "rl.group=2",
    "rl.batch_size=2",
    "rl.max_images=4",
    "rl.max_new_tokens=16",
    "rl.lora_r=4",
    "rl.lora_alpha=8",
    "rl.lr=1e-3",
    "rl.checkpoint_every=1",
]


def _log(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "rl" / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_rl_round_runs_resumes_and_restarts(micro_overrides, tmp_path, capsys):
    run_dir = tmp_path / "rl-run"
    argv = ["run", RECIPE, *micro_overrides, *FAST, *RL, "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 0
    assert "\nrl " in capsys.readouterr().out  # the summary table has the RL model's row
    res = json.loads((run_dir / "results.json").read_text())
    assert [r["round"] for r in res["rounds"]] == [1]
    rl = res["rl"]
    assert rl["name"] == "rl" and rl["model"] == str(run_dir / "rl" / "merged")
    assert {"acc_substring", "acc_strict", "n"} <= rl.keys()
    assert rl["training"]["steps"] == 2 and rl["training"]["images"] == 4 and rl["n"] == 4
    assert res["final_model"] == rl["model"]  # the round the user enabled is the model they get
    card = (run_dir / "rl" / "merged" / "README.md").read_text(encoding="utf-8")
    assert "round 1 of 1 and an RL round" in card and "| RL round (this model) |" in card
    assert "GRPO" in card and "| Round 1 (this model) |" not in card
    for stage in ("rl", "rl/evaluate"):
        assert (run_dir / stage / "_manifest.json").is_file(), stage
    assert (run_dir / "rl" / "merged" / "config.json").is_file()
    assert not list((run_dir / "rl").glob("checkpoint*"))
    log = _log(run_dir)
    assert [r["step"] for r in log] == [1, 2] and all(r["trained_answers"] == 4 for r in log)

    # --resume: the finished RL stage and its evaluation are skipped, nothing is rewritten
    weights = run_dir / "rl" / "merged" / "model.safetensors"
    stamps = {p: p.stat().st_mtime_ns for p in (weights, run_dir / "rl" / "_manifest.json")}
    assert main([*argv, "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    again = json.loads((run_dir / "results.json").read_text())["rl"]
    assert {k: v for k, v in again.items() if k != "training"} == {
        k: v for k, v in rl.items() if k != "training"
    }

    # killed during training, before any checkpoint: the stage starts over and trains the same steps
    for name in ("_manifest.json", "train_state.json"):
        (run_dir / "rl" / name).unlink()
    for name in ("adapter", "merged", "evaluate"):
        shutil.rmtree(run_dir / "rl" / name)
    (run_dir / "rl" / ".merged.tmp").mkdir()  # a half-written merge
    assert main([*argv, "--resume"]) == 0
    assert _log(run_dir) == log
    assert json.loads((run_dir / "results.json").read_text())["rl"]["acc_substring"] == rl["acc_substring"]
    assert not (run_dir / "rl" / ".merged.tmp").exists()
