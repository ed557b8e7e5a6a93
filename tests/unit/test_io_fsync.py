"""Atomic writes reach the disk before their name does: the temp file is fsynced, then its folder."""

from __future__ import annotations

import os
import stat

from selfsynth import io


def _record(monkeypatch, target):
    seen = []
    real = os.fsync

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append((kind, target.exists()))
        real(fd)

    monkeypatch.setattr(io.os, "fsync", fsync)
    return seen


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "part-00000.jsonl"
    seen = _record(monkeypatch, target)
    io.write_jsonl(target, [{"id": "a"}])
    assert seen == [("file", False), ("dir", True)]


def test_fsync_tree_covers_every_file_and_folder(tmp_path, monkeypatch):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "a.bin").write_bytes(b"x")
    (tmp_path / "m" / "sub" / "b.bin").write_bytes(b"y")
    seen = _record(monkeypatch, tmp_path)
    io.fsync_tree(tmp_path / "m")
    assert sorted(k for k, _ in seen) == ["dir", "dir", "file", "file"]
