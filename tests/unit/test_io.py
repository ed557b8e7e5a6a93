"""Atomic writes leave files with the mode the process umask gives, not mkstemp's private 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from selfsynth.io import atomic_write_bytes, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    write_json(tmp_path / "sub" / "b.json", {"k": 1})
    assert _mode(tmp_path / "a.bin") == 0o666 & ~umask
    assert _mode(tmp_path / "sub" / "b.json") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.bin", "b.json"]  # no temp left


def test_the_mode_follows_the_umask_of_the_process(tmp_path):
    code = (
        "import os, stat, sys\n"
        "os.umask(0o027)\n"
        "from selfsynth.io import atomic_write_bytes\n"
        "atomic_write_bytes(sys.argv[1], b'x')\n"
        "print(oct(stat.S_IMODE(os.stat(sys.argv[1]).st_mode)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "f")], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0o640"
