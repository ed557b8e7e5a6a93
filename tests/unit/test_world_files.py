"""Image paths in the world's caption / VQA files and in ``finetune.general_data`` stay inside their folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures_data import build_world, make_image, write

from selfsynth.config import DataConfig, RunConfig
from selfsynth.data import load_examples
from selfsynth.data.world_files import general_pairs, general_vqa
from selfsynth.errors import DataError
from selfsynth.stages.finetune import general_pairs as finetune_general_pairs

VQA = {"question": "Where is it?", "options": {"A": "perched", "B": "flying"}, "answer": "A", "kind": "pose"}


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    root = build_world(tmp_path)
    write(
        root / "captions.jsonl", _lines([{"id": "w00", "image": "images/train/0_0.png", "captions": ["a"]}])
    )
    write(root / "vqa.jsonl", _lines([{**VQA, "image": "images/train/0_0.png"}]))
    make_image(tmp_path / "secret.png")
    return root


def test_good_files_give_paths_as_written(world: Path) -> None:
    cfg = DataConfig(format="world", root=str(world))
    pairs = general_pairs(cfg, load_examples(cfg, "train"), ["Describe it."])
    assert [(q.id, q.image) for q in pairs] == [
        ("cap:w00#0", str(world / "images/train/0_0.png")),
        ("vqa:1", str(world / "images/train/0_0.png")),
    ]
    assert [r["image"] for r in general_vqa(cfg)] == [str(world / "images/train/0_0.png")]


@pytest.mark.parametrize("name", ["captions.jsonl", "vqa.jsonl"])
@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_escaping_path_in_caption_or_vqa_file(name: str, where: str, world: Path) -> None:
    rel = "../secret.png" if where == "dotdot" else str(world.parent / "secret.png")
    row = (
        {"id": "w01", "image": rel, "captions": ["b"]} if name == "captions.jsonl" else {**VQA, "image": rel}
    )
    with (world / name).open("a") as f:
        f.write(json.dumps(row) + "\n")
    cfg = DataConfig(format="world", root=str(world))
    train = load_examples(cfg, "train")
    calls = [lambda: general_pairs(cfg, train, ["Describe it."])]
    if name == "vqa.jsonl":
        calls.append(lambda: general_vqa(cfg))
    for call in calls:
        with pytest.raises(DataError, match="escapes the data root") as e:
            call()
        assert f"{world / name}:2:" in str(e.value) and "secret.png" in str(e.value)


def _ctx(general_data: Path) -> SimpleNamespace:
    cfg = RunConfig()
    cfg.finetune.general_data = str(general_data)
    return SimpleNamespace(cfg=cfg, train=[], pools=None)


def test_general_data_paths_stay_under_the_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "general"
    make_image(folder / "img" / "a.png")
    good = {"image": "img/a.png", "question": "What is shown?", "answer": "A square."}
    data = write(folder / "general.jsonl", _lines([good]))
    assert [q.image for q in finetune_general_pairs(_ctx(data))] == [str(folder / "img" / "a.png")]

    write(tmp_path / "etc" / "passwd", "root:x:0:0\n")
    write(data, _lines([good, {**good, "image": "../etc/passwd"}]))
    with pytest.raises(DataError, match="escapes the data root") as e:
        finetune_general_pairs(_ctx(data))
    assert f"{data}:2:" in str(e.value) and "../etc/passwd" in str(e.value)
    write(data, _lines([{**good, "image": None}]))
    with pytest.raises(DataError, match=r"general\.jsonl:1: empty image path"):
        finetune_general_pairs(_ctx(data))
