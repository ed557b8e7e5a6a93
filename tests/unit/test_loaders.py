"""Every data format loads its official layout into the expected Example records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_data import (
    BUILDERS,
    build_aircraft,
    build_chest,
    build_dogs,
    build_ham,
    build_pld,
    build_world,
    make_image,
)

from selfsynth.cli import main
from selfsynth.config import DataConfig
from selfsynth.data import class_names, load_examples, load_split
from selfsynth.errors import DataError

# format -> (train images, test images, labels)
EXPECTED = {
    "world": (4, 2, ["azure finch", "crimson tit"]),
    "finer": (4, 2, ["Airbus A300", "Boeing 707"]),
    "cub": (4, 2, ["Black footed Albatross", "Laysan Albatross"]),
    "dogs": (4, 2, ["Chihuahua", "Japanese spaniel"]),
    "aircraft": (6, 3, ["707-320", "727-200", "A300B4"]),
    "pld": (8, 2, ["Corn (maize) healthy", "Tomato Early blight"]),
    "chest_xray": (6, 2, ["normal", "pneumonia"]),
    "imagefolder": (4, 2, ["cat", "dog"]),
    "jsonl": (4, 2, ["grey wolf", "red fox"]),
    "csv": (4, 2, ["grey wolf", "red fox"]),
}


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["data", "inspect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_inspect_counts_every_format(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = BUILDERS[fmt](tmp_path)
    n_train, n_test, labels = EXPECTED[fmt]
    for split, n in (("train", n_train), ("test", n_test)):
        out = inspect(capsys, "--format", fmt, "--root", str(root), "--split", split, "--check-images")
        assert (out["format"], out["split"], out["images"]) == (fmt, split, n)
        assert out["labels"] == labels and out["classes"] == len(labels)
        assert sum(out["per_class"].values()) == n and out["skipped"] == []


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_records_are_absolute_existing_and_disjoint(fmt: str, tmp_path: Path) -> None:
    cfg = DataConfig(format=fmt, root=str(BUILDERS[fmt](tmp_path)))
    train, test = load_examples(cfg, "train"), load_examples(cfg, "test")
    assert {e.split for e in train} == {"train"} and {e.split for e in test} == {"test"}
    for e in train + test:
        assert Path(e.image).is_absolute() and Path(e.image).is_file()
        assert isinstance(e.id, str) and e.label
    assert not {e.image for e in train} & {e.image for e in test}
    assert class_names(train + test) == sorted({e.label for e in train + test})


def test_world_keeps_extra_fields_in_meta(tmp_path: Path) -> None:
    ex = load_examples(DataConfig(format="world", root=str(build_world(tmp_path))), "test")[0]
    assert ex.meta == {"visible_concepts": ["blue crown"], "attributes": {"crown": "blue"}}


def test_aircraft_levels_and_banner(tmp_path: Path) -> None:
    root = str(build_aircraft(tmp_path))
    fam = load_examples(DataConfig(format="aircraft", root=root, label_level="family"), "train")
    assert class_names(fam) == ["A300", "Boeing 707", "Boeing 727"]
    man = load_examples(DataConfig(format="aircraft", root=root, label_level="manufacturer"), "test")
    assert class_names(man) == ["Airbus", "Boeing"]
    assert all(e.meta["crop_bottom"] == 20 for e in fam + man)
    assert fam[0].id == "1000001"  # leading zeros of FGVC ids are kept: they are file names


def test_aircraft_without_trainval_uses_train_plus_val(tmp_path: Path) -> None:
    data = build_aircraft(tmp_path) / "data"
    lines = (data / "images_variant_trainval.txt").read_text().splitlines()
    (data / "images_variant_trainval.txt").unlink()
    (data / "images_variant_train.txt").write_text("\n".join(lines[:4]) + "\n")
    (data / "images_variant_val.txt").write_text("\n".join(lines[4:]) + "\n")
    assert len(load_examples(DataConfig(format="aircraft", root=str(data.parent)), "train")) == 6


def test_dogs_meta_and_ids(tmp_path: Path) -> None:
    ex = load_examples(DataConfig(format="dogs", root=str(build_dogs(tmp_path))), "test")
    assert [(e.id, e.label, e.meta["wnid"]) for e in ex] == [
        ("n02085620_2", "Chihuahua", "n02085620"),
        ("n02085782_2", "Japanese spaniel", "n02085782"),
    ]


def test_chest_xray_merges_val_and_reads_pathogen(tmp_path: Path) -> None:
    train = load_examples(DataConfig(format="chest_xray", root=str(build_chest(tmp_path).parent)), "train")
    assert sorted({e.meta["source_split"] for e in train}) == ["train", "val"]
    assert {e.meta.get("pathogen") for e in train if e.label == "pneumonia"} == {"bacteria", "virus"}


def test_ham10000_split_is_grouped_by_lesion_and_stratified(tmp_path: Path) -> None:
    root = str(build_ham(tmp_path))
    for seed in range(5):
        cfg = DataConfig(format="ham10000", root=root, split_seed=seed, test_fraction=0.3)
        train, test = load_examples(cfg, "train"), load_examples(cfg, "test")
        assert len(train) + len(test) == 10
        assert not {e.meta["lesion_id"] for e in train} & {e.meta["lesion_id"] for e in test}
        assert class_names(test) == ["melanocytic nevi", "melanoma"]
    assert test[0].meta["dx_type"] == "histo" and test[0].label in ("melanoma", "melanocytic nevi")


def test_seeded_split_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    root = str(build_pld(tmp_path, per_class=10))

    def ids(seed: int) -> list[str]:
        return [e.id for e in load_examples(DataConfig(format="pld", root=root, split_seed=seed), "test")]

    assert ids(0) == ids(0)
    assert len(ids(0)) == 4  # 20 % of 10 per class
    assert any(ids(s) != ids(0) for s in range(1, 6))


def test_split_file_by_path_or_file_name(tmp_path: Path) -> None:
    root = build_pld(tmp_path)
    split = {"train": ["Tomato___Early_blight/img_0_0.JPG", "img_1_0"], "test": ["img_0_1.JPG"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    cfg = DataConfig(format="pld", root=str(root), split_file=str(tmp_path / "split.json"))
    assert len(load_examples(cfg, "train")) == 2
    assert [e.id for e in load_examples(cfg, "test")] == ["Tomato___Early_blight/img_0_1.JPG"]


def test_caps_per_class_are_deterministic(tmp_path: Path) -> None:
    root = str(build_pld(tmp_path, per_class=10))
    cfg = DataConfig(format="pld", root=root, max_train_per_class=3, max_test_per_class=1)
    a, b = load_split(cfg, "train").per_class(), load_examples(cfg, "train")
    assert a == {"Corn (maize) healthy": 3, "Tomato Early blight": 3}
    assert [e.id for e in b] == [e.id for e in load_examples(cfg, "train")]
    assert len(load_examples(cfg, "test")) == 2


def test_imagefolder_without_split_folders_uses_seeded_split(tmp_path: Path) -> None:
    root = build_pld(tmp_path)
    cfg = DataConfig(format="imagefolder", root=str(root), test_fraction=0.4)
    assert class_names(load_examples(cfg, "test")) == ["Corn_(maize)___healthy", "Tomato___Early_blight"]
    assert len(load_examples(cfg, "test")) == 4


def test_manifest_with_split_column(tmp_path: Path) -> None:
    root = BUILDERS["jsonl"](tmp_path)
    rows = [
        json.loads(line) | {"split": s}
        for s in ("train", "test")
        for line in (root / f"{s}.jsonl").read_text().splitlines()
    ]
    rows[0]["split"] = "val"
    for s in ("train", "test"):
        (root / f"{s}.jsonl").unlink()
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(format="jsonl", root=str(root))
    assert len(load_examples(cfg, "train")) == 4 and len(load_examples(cfg, "test")) == 2
    assert load_examples(cfg, "train")[0].meta == {"photographer": "me"}


def test_finer_paths_relative_to_root_itself(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    make_image(root / "pics/a.jpg")
    (root / "x-test.json").write_text(json.dumps([{"id": 7, "img_path": "pics/a.jpg", "label": "A"}]))
    [ex] = load_examples(DataConfig(format="finer", root=str(root)), "test")
    assert (ex.id, ex.image) == ("7", str((root / "pics/a.jpg").resolve()))


def test_only_train_validation_and_test_splits(tmp_path: Path) -> None:
    cfg = DataConfig(format="world", root=str(build_world(tmp_path)))
    with pytest.raises(DataError, match="unknown split 'val'.*'validation'"):
        load_examples(cfg, "val")


def test_validation_carved_from_train_is_held_out_of_it(tmp_path: Path) -> None:
    cfg = DataConfig(
        format="imagefolder", root=str(BUILDERS["imagefolder"](tmp_path)), validation_per_class=1
    )
    full = load_examples(DataConfig(format="imagefolder", root=cfg.root), "train")
    train, val, test = (load_examples(cfg, split) for split in ("train", "validation", "test"))
    assert len(val) == 2 and class_names(val) == class_names(full)  # one per class
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in full}
    assert not {e.id for e in train} & {e.id for e in val}
    assert test == load_examples(DataConfig(format="imagefolder", root=cfg.root), "test")
    again = load_examples(cfg, "validation")
    assert [e.id for e in again] == [e.id for e in val]
    other = load_examples(
        DataConfig(format="imagefolder", root=cfg.root, validation_per_class=1, split_seed=5), "validation"
    )
    assert len(other) == 2


def test_a_format_without_its_own_validation_split_says_how_to_get_one(tmp_path: Path) -> None:
    cfg = DataConfig(format="imagefolder", root=str(BUILDERS["imagefolder"](tmp_path)))
    with pytest.raises(DataError, match="validation_per_class"):
        load_examples(cfg, "validation")


def test_a_world_without_validation_file_says_to_redraw(tmp_path: Path) -> None:
    cfg = DataConfig(format="world", root=str(build_world(tmp_path)))
    (Path(cfg.root) / "world.json").write_text("{}")
    with pytest.raises(DataError, match="no validation split.*selfsynth world make"):
        load_examples(cfg, "validation")


def test_ham10000_user_split_warns_about_shared_lesions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = build_ham(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["ISIC_0000001", "ISIC_0000007.jpg"], "test": ["ISIC_0000002"]}))
    cfg = DataConfig(format="ham10000", root=str(root), split_file=str(split))
    assert [e.id for e in load_examples(cfg, "train")] == ["ISIC_0000001", "ISIC_0000007"]
    assert "1 lesions have images in both train and test (e.g. HAM_0000001)" in caplog.text
