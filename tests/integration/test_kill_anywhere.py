"""SIGKILL at eleven moments spread over every stage, each followed by ``--resume``: the run that
finally completes equals the uninterrupted one, row for row, metric for metric, weight for weight.

Each moment is a file that appears while a stage works (its first part file, a training
checkpoint, the merge's temp folder); the process is killed as soon as that file appears, newer
than the process itself. A moment the run passed between two polls is recorded as missed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

pytestmark = pytest.mark.slow
RECIPE = str(Path(__file__).parents[2] / "configs" / "world.yaml")
TEXT_OUTPUTS = (
    "part-*.jsonl",
    "concepts.json",
    "selection.jsonl",
    "accepted.jsonl",
    "train.jsonl",
    "metrics.json",
)


def _part(stage: str, n: int) -> Callable[[Path, float], bool]:
    return lambda run, t0: _newer(run / stage / f"part-{n:05d}.jsonl", t0)


def _training(stage: str, steps: int) -> Callable[[Path, float], bool]:
    """Training is under way, past ``steps`` steps and past a checkpoint."""

    def seen(run: Path, t0: float) -> bool:
        log = run / stage / "train_log.jsonl"
        if not (_newer(log, t0) and (run / stage / "checkpoint").exists()):
            return False
        return len(log.read_text().splitlines()) >= steps

    return seen


def _merging(stage: str) -> Callable[[Path, float], bool]:
    return lambda run, t0: _newer(run / stage / ".merged.tmp", t0)


def _begun(stage: str) -> Callable[[Path, float], bool]:
    return lambda run, t0: _newer(run / stage / "_progress.json", t0)


def _newer(path: Path, t0: float) -> bool:
    try:
        return path.stat().st_mtime >= t0
    except OSError:
        return False


# (stage, what is happening, when to kill), in the order the run reaches them
MOMENTS = [
    ("base/evaluate", "first part written", _part("base/evaluate", 0)),
    ("round_1/describe", "first part written", _part("round_1/describe", 0)),
    ("concepts/select", "selecting", _begun("concepts/select")),
    ("round_1/synthesize", "first part written", _part("round_1/synthesize", 0)),
    ("round_1/finetune", "training, step 5", _training("round_1/finetune", 5)),
    ("round_1/finetune", "merging", _merging("round_1/finetune")),
    ("round_1/evaluate", "first part written", _part("round_1/evaluate", 0)),
    ("round_2/sample", "first part written", _part("round_2/sample", 0)),
    ("round_2/finetune", "training, step 4", _training("round_2/finetune", 4)),
    ("round_2/finetune", "merging", _merging("round_2/finetune")),
    ("round_2/evaluate", "first part written", _part("round_2/evaluate", 0)),
]


def _start(argv: list[str]) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # The same thread counts as the in-process reference run: float sums differ between thread
    # counts. numpy's BLAS (the IB scores) keeps its own, which OMP_NUM_THREADS alone would also set.
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    for pool in threadpool_info():
        if pool["internal_api"] == "openblas":
            env["OPENBLAS_NUM_THREADS"] = str(pool["num_threads"])
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    t0 = time.time() - 0.01  # mtimes may round below the clock read
    cmd = [sys.executable, "-m", "selfsynth", "-q", *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), t0


def _kill_at_every_moment(argv: list[str], run_dir: Path) -> tuple[list[str], list[str], int]:
    """Run, killing at each moment and resuming; (moments hit, moments missed, exit code of the last run)."""
    hits, missed = [], []
    proc, t0 = _start(argv)
    deadline = time.time() + 900
    for stage, what, reached in MOMENTS:
        while time.time() < deadline:
            if reached(run_dir, t0):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                assert not (run_dir / stage / "_manifest.json").is_file(), f"{stage} finished before the kill"
                hits.append(f"{stage}: {what} ({time.time() - t0:.0f} s after its start)")
                proc, t0 = _start([*argv, "--resume"])
                break
            if (run_dir / stage / "_manifest.json").is_file() or proc.poll() is not None:
                missed.append(f"{stage}: {what}")
                break
            time.sleep(0.01)
    err = proc.communicate(timeout=max(1.0, deadline - time.time()))[1].decode()
    assert proc.returncode == 0, err[-3000:]
    return hits, missed, proc.returncode


def _outputs(run_dir: Path) -> dict[str, str]:
    """Every stage's rows and results as text (run folder taken out), and the final weights' digest."""
    out = {}
    for pattern in TEXT_OUTPUTS:
        for f in run_dir.rglob(pattern):
            out[str(f.relative_to(run_dir))] = f.read_text().replace(str(run_dir), "<run>")
    for f in run_dir.rglob("train_log.jsonl"):  # the loss log without its wall-clock column
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        out[str(f.relative_to(run_dir))] = json.dumps(
            [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
        )
    for f in run_dir.rglob("merged/*.safetensors"):
        out[str(f.relative_to(run_dir))] = hashlib.sha256(f.read_bytes()).hexdigest()
    res = json.loads((run_dir / "results.json").read_text().replace(str(run_dir), "<run>"))
    out["results.json"] = json.dumps([res["base"], *res["rounds"], res["final_model"]], sort_keys=True)
    return out


def test_killed_anywhere_and_resumed_equals_the_uninterrupted_run(finished_run, micro_overrides, tmp_path):
    run_dir = tmp_path / "killed"
    argv = ["run", RECIPE, *micro_overrides, "--run-dir", str(run_dir), "--no-progress"]
    t = time.time()
    hits, missed, _ = _kill_at_every_moment(argv, run_dir)
    seconds = time.time() - t
    print(f"\n{len(hits)} kills in {seconds:.0f} s; hit: {hits}; missed: {missed}")
    assert len(hits) >= 10, f"only {len(hits)} kills landed; missed: {missed}"
    stages = {h.split(":")[0] for h in hits}
    assert len(stages) >= 8, f"kills landed in {sorted(stages)} only"
    assert any("training" in h for h in hits) and any("merging" in h for h in hits), hits
    got, want = _outputs(run_dir), _outputs(finished_run)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    assert not list(run_dir.rglob("checkpoint*")) and not list(run_dir.glob("*/*/.*.tmp"))
