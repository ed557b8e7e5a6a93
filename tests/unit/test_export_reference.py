"""``selfsynth data export-reference``: any dataset as the reference scripts' ``{name}-{split}.json`` lists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_data import BUILDERS, build_cub, build_world

from selfsynth.cli import main
from selfsynth.config import DataConfig
from selfsynth.data import load_examples


def _examples(fmt: str, root: Path | str, split: str) -> list[tuple[str, str, str]]:
    return [
        (e.id, os.path.realpath(e.image), e.label)
        for e in load_examples(DataConfig(format=fmt, root=str(root)), split)
    ]


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_lists_read_back_as_the_same_dataset(fmt: str, tmp_path: Path) -> None:
    root = BUILDERS[fmt](tmp_path)
    if fmt == "cub":
        root = root.parent  # the cub format takes the folder holding CUB_200_2011
    out = tmp_path / "lists"  # next to the dataset, as in the reference layout
    assert main(["data", "export-reference", "--format", fmt, "--root", str(root), "--out", str(out)]) == 0
    for split in ("train", "test"):
        items = json.loads((out / f"{fmt}-{split}.json").read_text())
        assert all(set(it) == {"id", "img_path", "label"} for it in items)
        assert all(not os.path.isabs(it["img_path"]) for it in items)
        # the finer format is the reference layout's reader: same ids, images and labels, same order
        assert _examples("finer", out, split) == _examples(fmt, root, split)


def test_embedded_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfsynth.data.world import make_world

    world = tmp_path / "world"
    make_world(world, species=4, train_per_class=2, test_per_class=1, size=64)
    out = tmp_path / "data"
    assert (
        main(["data", "export-reference", "--format", "world", "--root", str(world), "--out", str(out)]) == 0
    )
    assert f"{out / 'world-train.json'}: 8 train images" in capsys.readouterr().out
    train = json.loads((out / "world-train.json").read_text())
    test = json.loads((out / "world-test.json").read_text())
    assert len(train) == 8 and len(test) == 4
    assert all(it["img_path"].startswith("world/images/") for it in train + test)
    assert len({it["label"] for it in train}) == 4
    rows = [json.loads(x) for x in (world / "train.jsonl").read_text().splitlines()]
    assert [it["id"] for it in train] == [r["id"] for r in rows]
    assert [it["label"] for it in train] == [r["label"] for r in rows]


def test_image_root_must_hold_every_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = build_world(tmp_path / "datasets")
    out = tmp_path / "elsewhere" / "lists"  # OUT's parent does not hold the images
    argv = ["data", "export-reference", "--format", "world", "--root", str(world), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not under the image root" in err and "--image-root" in err
    assert not out.exists()
    assert main([*argv, "--image-root", str(world), "--name", "birds"]) == 0
    items = json.loads((out / "birds-test.json").read_text())
    assert {it["img_path"] for it in items} == {"images/test/0_2.png", "images/test/1_2.png"}


def test_existing_lists_need_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_cub(tmp_path)
    out = tmp_path / "lists"
    argv = ["data", "export-reference", "--format", "cub", "--root", str(root.parent), "--out", str(out)]
    assert main(argv) == 0
    (out / "cub-test.json").write_text("[]")
    assert main(argv) == 2
    assert "cub-train.json" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert len(json.loads((out / "cub-test.json").read_text())) == 2


def test_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "data",
        "export-reference",
        "--format",
        "cubb",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "did you mean 'cub'" in capsys.readouterr().err
