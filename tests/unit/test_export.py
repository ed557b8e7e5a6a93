"""``selfsynth export``: a round's pairs in each trainer's layout, read back by that trainer's reader."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures_run import build_run
from PIL import Image

from selfsynth.cli import main
from selfsynth.export.pairs import load_pairs

datasets = pytest.importorskip("datasets")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return build_run(tmp_path)


def export(run: Path, out: Path, fmt: str, *extra: str) -> None:
    assert main(["export", str(run), "--format", fmt, "--out", str(out), *extra]) == 0


def read_json_dataset(path: Path, tmp_path: Path) -> list[dict]:
    """The rows as ``datasets``' JSON builder reads them (what LLaMA-Factory, ms-swift and TRL call)."""
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    return ds.to_list()


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_pairs_carry_concepts_and_scores(run: Path) -> None:
    r1 = {p.id: p for p in load_pairs(run, 1)}
    assert set(r1) == {"a/1#0", "a/1#1", "b/1#2"}  # the general pair of the mix is left out
    assert r1["a/1#1"].concepts == ["blue crown", "white wing bars"]
    assert r1["a/1#1"].concept_scores == [0.91, 0.55]
    assert r1["b/1#2"].image_id == "b/1" and r1["b/1#2"].concepts == ["red breast"]
    assert all(p.rs_score is None for p in r1.values())  # round 1 is synthesized, not sampled
    r2 = {p.id: p for p in load_pairs(run, 2)}
    assert r2["a/1#0"].rs_score == pytest.approx(0.61) and r2["b/1#0"].rs_score is None
    assert r2["a/1#0"].kind == "explain" and r2["b/1#0"].kind == "fallback"
    mixed = load_pairs(run, 2, include_general=True)
    assert [p.kind for p in mixed] == ["fallback", "general", "explain"]  # the training order
    assert mixed[1].concepts == [] and mixed[1].image_id == ""


def test_llava(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "llava"
    export(run, out, "llava")
    assert "2 pairs of round 2" in capsys.readouterr().out  # the last round by default
    items = json.loads((out / "train.json").read_text())
    assert isinstance(items, list) and len(items) == 2
    by_id = {it["id"]: it for it in items}
    item = by_id["a/1#0"]
    assert [t["from"] for t in item["conversations"]] == ["human", "gpt"]
    assert item["conversations"][0]["value"] == "<image>\nWhy?"
    assert item["conversations"][1]["value"] == "An azure finch, blue crown."
    assert not os.path.isabs(item["image"])  # LLaVA joins it to --image_folder
    assert (out / item["image"]).resolve() == (tmp_path / "data/images/azure/1.png").resolve()
    assert item["label"] == "azure finch" and item["concepts"] == ["blue crown", "white wing bars"]
    assert item["concept_scores"] == [0.91, 0.55] and item["rs_score"] == pytest.approx(0.61)
    rows = read_json_dataset(out / "train.json", tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(by_id)
    assert {r["id"]: r["rs_score"] for r in rows}["b/1#0"] is None


def _check_messages_rows(rows: list[dict], base: Path) -> None:
    """What LLaMA-Factory and ms-swift require: user/assistant turns, one <image> per image, files there."""
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["user", "assistant"]
        assert sum(m["content"].count("<image>") for m in r["messages"]) == len(r["images"]) == 1
        assert r["messages"][0]["content"].startswith("<image>")
        assert all((base / img).is_file() for img in r["images"])


def test_sharegpt_declares_itself_to_llama_factory(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "lf"
    export(run, out, "sharegpt", "--round", "1", "--name", "cub r1")
    info = json.loads((out / "dataset_info.json").read_text())
    assert list(info) == ["cub_r1"]
    entry = info["cub_r1"]
    assert entry["formatting"] == "sharegpt" and (out / entry["file_name"]).is_file()
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    assert entry["tags"] == {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
    }
    rows = read_json_dataset(out / entry["file_name"], tmp_path)
    assert len(rows) == 3
    _check_messages_rows(rows, out)  # LLaMA-Factory resolves images against media_dir = dataset_dir
    fallback = next(r for r in rows if r["kind"] == "fallback")
    assert fallback["messages"][1]["content"] == "This is an image of crimson tit."


def test_messages_jsonl_for_ms_swift(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "swift"
    export(run, out, "messages")
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(set(json.loads(x)) >= {"messages", "images"} for x in lines)
    rows = read_json_dataset(out / "train.jsonl", tmp_path)
    _check_messages_rows(rows, out)
    assert {r["label"] for r in rows} == {"azure finch", "crimson tit"}


def test_trl_content_blocks(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "trl"
    export(run, out, "trl", "--round", "1")
    rows = read_json_dataset(out / "train.jsonl", tmp_path)
    assert len(rows) == 3
    for r in rows:
        user, assistant = r["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert [b["type"] for b in user["content"]] == ["image", "text"]
        assert sum(b["type"] == "image" for m in r["messages"] for b in m["content"]) == len(r["images"])
        assert [b["type"] for b in assistant["content"]] == ["text"] and assistant["content"][0]["text"]
        assert (out / r["images"][0]).is_file()
    simple = next(r for r in rows if r["id"] == "a/1#0")
    assert simple["messages"][0]["content"][1]["text"] == "What bird is this?"


def test_hf_dataset_embeds_images_and_has_a_card(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "hfds"
    export(run, out, "hf")
    original = pixels(tmp_path / "data/images/azure/1.png")
    shutil.rmtree(tmp_path / "data")  # the dataset must not point back at the run's images
    ds = datasets.load_from_disk(str(out))
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.num_rows == 2
    row = next(r for r in ds if r["id"] == "a/1#0")
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), original)
    assert row["question"] == "Why?" and row["answer"] == "An azure finch, blue crown."
    assert row["label"] == "azure finch" and row["concepts"] == ["blue crown", "white wing bars"]
    assert row["concept_scores"] == pytest.approx([0.91, 0.55]) and row["rs_score"] == pytest.approx(0.61)
    assert row["round"] == 2
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["task_categories"][0] == "image-text-to-text" and meta["size_categories"] == ["n<1K"]
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "README.md")
    assert card.data.to_dict()["pretty_name"] == "selfsynth_run_round2"
    assert "method: `ours`" in card.text


def test_hf_without_datasets_says_what_to_install(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now fails
    out = tmp_path / "hfds"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 2
    assert "pip install 'selfsynth[hf]'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".hfds.tmp-*"))  # nothing half-written


def test_copied_images_make_a_self_contained_folder(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "copied"
    export(run, out, "llava", "--copy-images", "--include-general")
    items = json.loads((out / "train.json").read_text())
    assert len(items) == 3 and sum(it["kind"] == "general" for it in items) == 1
    # two classes' images share the file name 1.png: each keeps its own copy
    assert sorted({it["image"] for it in items}) == ["images/azure/1.png", "images/crimson/1.png"]
    moved = tmp_path / "elsewhere" / "copied"
    moved.parent.mkdir()
    out.rename(moved)
    shutil.rmtree(tmp_path / "data")
    for it in items:
        assert (moved / it["image"]).is_file()
    fallback = next(it for it in items if it["kind"] == "fallback")
    assert Image.open(moved / fallback["image"]).size == (8, 8)


def test_an_empty_output_folder_is_fine(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    export(run, out, "messages")
    assert (out / "train.jsonl").is_file()


def test_default_round_is_the_last_with_pairs(run: Path, tmp_path: Path, capsys) -> None:
    (run / "round_2" / "finetune" / "train.jsonl").unlink()
    export(run, tmp_path / "o", "llava")
    assert "3 pairs of round 1" in capsys.readouterr().out


def test_unfinished_training_is_exported_with_a_warning(run: Path, tmp_path: Path, caplog) -> None:
    (run / "round_2" / "finetune" / "_manifest.json").unlink()
    export(run, tmp_path / "o", "messages")
    assert "round 2's fine-tuning has not finished" in caplog.text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "sharegtp"], "unknown export format 'sharegtp' (did you mean 'sharegpt'?)"),
        (["--format", "llava", "--round", "3"], "no training pairs for round 3"),
        (["--format", "llava", "--round", "3"], "rounds with pairs: 1, 2; pass --round"),
    ],
)
def test_bad_arguments(run: Path, tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["export", str(run), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_run_problems(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "o")
    assert main(["export", str(tmp_path / "nope"), "--format", "llava", "--out", out]) == 2
    assert "nope: no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--format", "llava", "--out", out]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text("name: x\n")
    assert main(["export", str(fresh), "--format", "llava", "--out", out]) == 2
    assert "has no training pairs yet" in capsys.readouterr().err


def test_output_that_is_not_empty_is_refused(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--format", "llava", "--out", str(out)]) == 2
    assert f"{out} already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(run), "--format", "llava", "--out", str(out / "keep.txt")]) == 2


def test_moved_images_are_named(run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "data/images/crimson/1.png").unlink()
    assert main(["export", str(run), "--format", "llava", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "crimson/1.png of pair b/1#0 is not there" in err and "put it back" in err


def test_relative_output_path(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    export(run, Path("rel"), "llava")
    assert "as llava: rel/train.json" in capsys.readouterr().out
    items = json.loads((tmp_path / "rel" / "train.json").read_text())
    assert {it["image"] for it in items} == {"../data/images/azure/1.png", "../data/images/crimson/1.png"}


def test_a_malformed_pair_is_named_by_file_and_line(run: Path, tmp_path: Path, capsys) -> None:
    train = run / "round_2" / "finetune" / "train.jsonl"
    train.write_text(train.read_text() + json.dumps({"id": "x#0", "image": "x.png"}) + "\n")
    assert main(["export", str(run), "--format", "llava", "--out", str(tmp_path / "o")]) == 2
    assert f"{train}:4: not a training pair: no 'question'" in capsys.readouterr().err
