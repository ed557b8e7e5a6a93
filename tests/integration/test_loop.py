"""The whole loop through the real CLI on a micro world: every stage, 2 rounds, report, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfsynth.cli import main

pytestmark = pytest.mark.slow
RECIPE = str(Path(__file__).parents[2] / "configs" / "world.yaml")


def _metrics(run_dir: Path) -> list[tuple]:
    res = json.loads((run_dir / "results.json").read_text())
    rows = [res["base"], *res["rounds"]]
    return [(r["name"], r["acc_substring"], r["acc_strict"], r.get("general_vqa")) for r in rows]


def test_end_to_end(finished_run, capsys):
    run_dir = finished_run
    res = json.loads((run_dir / "results.json").read_text())
    assert [r["round"] for r in res["rounds"]] == [1, 2]
    for stage in (
        "concepts",
        "concepts/select",
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
    sel = [json.loads(x) for x in (run_dir / "concepts" / "selection.jsonl").read_text().splitlines()]
    assert sel and all(len(r["selected"]) >= 3 for r in sel)
    accepted = (run_dir / "round_2" / "sample" / "accepted.jsonl").read_text().splitlines()
    assert accepted
    assert (run_dir / "report.html").is_file() and (run_dir / "results.md").is_file()
    # a second run of the same command refuses to overwrite; --resume skips everything
    argv = ["run", RECIPE, "data.root=x", "model.path=y", "--run-dir", str(run_dir)]
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["status", str(run_dir)]) == 0
    assert "round_2/evaluate" in capsys.readouterr().out


def test_final_model_loads_with_plain_transformers(finished_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import selfsynth  # noqa: F401  (registers the embedded tower)

    final = json.loads((finished_run / "results.json").read_text())["final_model"]
    model = AutoModelForImageTextToText.from_pretrained(final)
    AutoProcessor.from_pretrained(final)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_sigkill_mid_stage_then_resume_matches(finished_run, micro_overrides, tmp_path):
    run_dir = tmp_path / "killed"
    argv = ["run", RECIPE, *micro_overrides, "--run-dir", str(run_dir), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfsynth", "-q", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Kill inside round 2's sampling, after its first chunk is saved and before the stage ends.
    target = run_dir / "round_2" / "sample"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (target / "part-00000.jsonl").is_file() and not (target / "_manifest.json").is_file():
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (target / "_manifest.json").is_file()
    assert main([*argv, "--resume"]) == 0
    assert _metrics(run_dir) == _metrics(finished_run)
