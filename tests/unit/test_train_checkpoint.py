"""Training checkpoints are published by one atomic rename: a kill during a save keeps the previous one."""

from __future__ import annotations

import json

import pytest
import torch

from selfsynth.models import train_checkpoint as tc

PLAN = {"steps": 10, "global_batch": 2, "examples": 4, "seed": 0, "grouped": 0}


class Adapter:
    """Stands in for a peft model: save_pretrained writes one weights file."""

    def __init__(self, value: float) -> None:
        self.value = value

    def save_pretrained(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.json").write_text(json.dumps(self.value))


def _save(out, step, fail=None):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    rows = [{"step": s + 1, "loss": 1.0 / (s + 1)} for s in range(step)]
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tc.save_checkpoint(out, Adapter(float(step)), opt, sched, step, PLAN)


def _weights(folder) -> float:
    return json.loads((folder / "adapter" / "weights.json").read_text())


def test_the_link_follows_the_newest_checkpoint_and_old_ones_go(tmp_path):
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    link = tmp_path / "checkpoint"
    assert link.is_symlink() and (link / "state.json").is_file()
    assert json.loads((link / "state.json").read_text())["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint",
        "checkpoint-000004",
        "train_log.jsonl",
    ]
    assert _weights(tc.find_checkpoint(tmp_path)) == 4.0
    blob = torch.load(
        tc.find_checkpoint(tmp_path) / "optim.pt", weights_only=True
    )  # plain tensors and numbers
    assert set(blob) == {"optimizer", "scheduler"}
    tc.remove_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_log.jsonl"]
    assert tc.find_checkpoint(tmp_path) is None


def test_a_kill_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 2)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tc, "fsync_tree", killed)  # dies after the new files, before the rename
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 4)
    monkeypatch.undo()
    assert _weights(tc.find_checkpoint(tmp_path)) == 2.0
    assert (tmp_path / ".checkpoint-000004.tmp").is_dir()  # the half-written one is never trusted
    _save(tmp_path, 6)
    assert _weights(tc.find_checkpoint(tmp_path)) == 6.0
    assert not (tmp_path / ".checkpoint-000004.tmp").exists()  # cleared by the next save


def test_a_kill_between_rename_and_link_swap_resumes_from_the_newer(tmp_path, monkeypatch):
    _save(tmp_path, 2)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tc, "_point_link", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 4)
    monkeypatch.undo()
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 2
    assert _weights(tc.find_checkpoint(tmp_path)) == 4.0  # complete, so the newest wins


def test_a_plain_checkpoint_folder_of_the_older_layout_is_kept_until_replaced(tmp_path):
    old = tmp_path / "checkpoint"
    old.mkdir()
    (old / "state.json").write_text(json.dumps({"step": 3}))
    assert tc.find_checkpoint(tmp_path) == old
    _save(tmp_path, 6)
    assert (tmp_path / "checkpoint").is_symlink() and _weights(tc.find_checkpoint(tmp_path)) == 6.0
