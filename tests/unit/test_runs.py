import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfsynth.errors import SelfsynthError
from selfsynth.io import read_jsonl
from selfsynth.runs import (
    RunLock,
    Stage,
    chunk_seed,
    iter_manifests,
    part_mismatch,
    stage_fp,
    used_stage_seconds,
)

RECIPE = str(Path(__file__).parents[2] / "configs" / "world.yaml")


def test_stage_skip_and_fingerprint_change(tmp_path):
    st = Stage(tmp_path, "round_1/describe", stage_fp({"a": 1}))
    assert not st.done()
    st.begin()
    (st.dir / "out.txt").write_text("x")
    st.finish(images=3)
    assert Stage(tmp_path, "round_1/describe", stage_fp({"a": 1})).done()
    changed = Stage(tmp_path, "round_1/describe", stage_fp({"a": 2}))
    assert not changed.done()
    changed.begin()  # stale outputs of other settings are cleared
    assert not (changed.dir / "out.txt").exists()
    assert [name for name, _ in iter_manifests(tmp_path)] == []


def test_stage_seconds_count_reused_stages_and_not_stale_ones(tmp_path):
    from selfsynth.io import write_json

    for name, fp, seconds in (("a", "fa", 100.0), ("b", "fb", 20.0), ("old", "fo", 7.0)):
        Stage(tmp_path, name, fp).begin()
        write_json(tmp_path / name / "_manifest.json", {"stage": name, "fingerprint": fp, "seconds": seconds})
    # a second invocation (a resume): "a" is reused, "b" has other settings now and runs again
    assert Stage(tmp_path, "a", "fa").done()
    redo = Stage(tmp_path, "b", "fb2")
    assert not redo.done()
    redo.begin()
    redo.finish()
    assert 100.0 <= used_stage_seconds(tmp_path) < 101.0  # "old" was never used by this run
    assert used_stage_seconds(tmp_path / "elsewhere") == 0.0


def test_chunks_resume_only_missing(tmp_path):
    calls = []

    def work(c, chunk):
        calls.append(c)
        if c == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of chunk 2
        return [{"i": x, "seed": chunk_seed(0, "s", c)} for x in chunk]

    st = Stage(tmp_path, "s", "fp").begin()
    with pytest.raises(KeyboardInterrupt):
        st.chunks(list(range(10)), 3, work, progress=False)
    assert calls == [0, 1, 2]
    st2 = Stage(tmp_path, "s", "fp").begin()
    rows = st2.chunks(list(range(10)), 3, work, progress=False)
    assert calls == [0, 1, 2, 2, 3]
    assert [r["i"] for r in rows] == list(range(10))
    assert read_jsonl(st2.dir / "part-00000.jsonl")[0]["seed"] == chunk_seed(0, "s", 0)


def test_chunk_seed_stable():
    assert chunk_seed(1, "a", 3) == chunk_seed(1, "a", 3) != chunk_seed(1, "a", 4)


class Item:
    def __init__(self, id: str) -> None:
        self.id = id


def _per_question(c, chunk):
    return [{"id": f"{e.id}#{q}", "c": c} for e in chunk for q in range(2)]


def test_a_part_that_is_not_its_chunks_work_is_redone(tmp_path, caplog):
    items = [Item(f"img{i}") for i in range(7)]
    calls = []

    def work(c, chunk):
        calls.append(c)
        return _per_question(c, chunk)

    st = Stage(tmp_path, "s", "fp").begin()
    first = st.chunks(items, 3, work, progress=False)
    assert calls == [0, 1, 2]
    (st.dir / "part-00000.jsonl").write_text("")  # empty: what a crash can leave without fsync
    part1 = (st.dir / "part-00001.jsonl").read_text().splitlines()
    (st.dir / "part-00001.jsonl").write_text("\n".join(part1[:3]) + "\n")  # cut: img5 is missing
    (st.dir / "part-00002.jsonl").write_text('{"id": "img6#0", "c"')  # a torn last line
    with caplog.at_level("WARNING"):
        again = Stage(tmp_path, "s", "fp").begin().chunks(items, 3, work, progress=False)
    assert calls == [0, 1, 2, 0, 1, 2] and again == first
    assert "part-00000.jsonl is stale (0 rows for 3 items)" in caplog.text
    assert "part-00001.jsonl is stale (no rows for 'img5')" in caplog.text
    assert "part-00002.jsonl is unreadable" in caplog.text
    Stage(tmp_path, "s", "fp").begin().chunks(items, 3, work, progress=False)
    assert len(calls) == 6  # intact parts are trusted


def test_parts_of_another_chunk_size_are_not_reused(tmp_path, caplog):
    items = [Item(f"img{i}") for i in range(6)]
    calls = []

    def work(c, chunk):
        calls.append(c)
        return [{"id": e.id} for e in chunk]

    Stage(tmp_path, "s", "fp").begin().chunks(items, 3, work, progress=False)
    with caplog.at_level("WARNING"):
        rows = Stage(tmp_path, "s", "fp").begin().chunks(items, 2, work, progress=False)
    assert [r["id"] for r in rows] == [e.id for e in items]
    assert calls == [0, 1, 0, 1, 2]
    assert "part-00000.jsonl is stale (row 3 is 'img2', expected 'nothing')" in caplog.text
    assert "part-00001.jsonl is stale (row 1 is 'img3', expected 'img2')" in caplog.text


def test_part_mismatch_rules():
    chunk = [Item("a"), Item("b")]
    assert part_mismatch([{"id": "a"}, {"id": "b"}], chunk) == ""
    assert part_mismatch([{"id": "x#0", "image_id": "a"}, {"id": "y", "image_id": "b"}], chunk) == ""
    assert part_mismatch([{"id": "a#0"}, {"id": "a#1"}, {"id": "b#0"}], chunk) == ""
    assert part_mismatch([{"id": "b"}, {"id": "a"}], chunk) == "row 1 is 'b', expected 'a'"
    assert part_mismatch([{"id": "a"}, {"id": "b"}, {"id": "c"}], chunk) == "row 3 is 'c', expected 'nothing'"
    assert part_mismatch([{"id": "ab"}, {"id": "b"}], chunk) == "row 1 is 'ab', expected 'a'"
    assert part_mismatch([{"i": 1}], [1, 2]) == "1 rows for 2 items"
    assert part_mismatch([{"i": 1}, {"i": 2}], [1, 2]) == ""


def test_a_second_lock_on_a_run_dir_names_the_holder(tmp_path):
    with RunLock(tmp_path / "run") as held:
        assert (tmp_path / "run" / ".lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(SelfsynthError, match=rf"pid {os.getpid()}.*kill {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
        assert held.path.is_file()
    RunLock(tmp_path / "run").acquire().release()  # released: free again


HOLD = "import sys, time\nfrom selfsynth.runs import RunLock\nRunLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"


def test_a_second_run_on_a_locked_dir_exits_at_once_naming_the_pid(tmp_path, capsys):
    from selfsynth.cli import main

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["run", RECIPE, "data.root=x", "model.path=y", "--run-dir", str(run_dir), "--resume"]
        t0 = time.time()
        assert main(argv) == 2
        assert time.time() - t0 < 5
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "--resume" in err
        assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2  # the demo's run folder too
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no world drawn
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, and the lock file alone is no earlier run
    lock = RunLock(run_dir).acquire()
    lock.release()
    from selfsynth.commands.run import check_run_dir

    check_run_dir(run_dir, resume=False)
