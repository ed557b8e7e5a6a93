import pytest

from selfsynth.io import read_jsonl
from selfsynth.runs import Stage, chunk_seed, iter_manifests, stage_fp


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
