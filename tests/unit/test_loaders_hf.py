"""``data.format=hf``: save_to_disk folders and parquet files load through the same checks as every format."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import bomb_png
from PIL import Image

from selfsynth.cli import main
from selfsynth.config import DataConfig, load_config
from selfsynth.data import load_examples, load_split
from selfsynth.data.registry import image_roots
from selfsynth.errors import ConfigError, DataError, SelfsynthError

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAMES = ["cat", "dog"]


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stored images go under tmp_path, never into the user's cache."""
    monkeypatch.setenv("SELFSYNTH_CACHE", str(tmp_path / "cache"))
    datasets.disable_progress_bars()
    return tmp_path / "cache" / "images"


def png(seed: int, side: int = 8) -> bytes:
    buf = io.BytesIO()
    rgb = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def table(images: list, labels: list, names: list[str] | None = NAMES):
    label = datasets.ClassLabel(names=names) if names else datasets.Value("string")
    features = datasets.Features({"image": datasets.Image(), "label": label})
    rows = [{"bytes": im, "path": None} if isinstance(im, bytes) else im for im in images]
    return datasets.Dataset.from_dict({"image": rows, "label": labels}, features=features)


def saved_dict(root: Path, **splits) -> Path:
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(format="hf", root=str(root), **kw)


def test_save_to_disk_dict_with_class_labels(tmp_path: Path, store: Path) -> None:
    root = saved_dict(
        tmp_path / "ds",
        train=table([png(0), png(1), png(2)], [0, 1, 0]),
        validation=table([png(3)], [1]),
        test=table([png(4), png(0)], [1, 0]),
    )
    train = load_examples(cfg(root), "train")
    assert [(e.id, e.label, e.split) for e in train] == [
        ("train/0", "cat", "train"),
        ("train/1", "dog", "train"),
        ("train/2", "cat", "train"),
        ("validation/0", "dog", "train"),  # validation is merged into train, as every format does
    ]
    assert [Path(e.image).read_bytes() for e in train] == [png(0), png(1), png(2), png(3)]
    assert all(Path(e.image).parent.parent == store for e in train)
    assert image_roots("hf", root) == [root, store]  # where the report may embed images from
    test = load_examples(cfg(root), "test")
    assert [(e.id, e.label) for e in test] == [("test/0", "dog"), ("test/1", "cat")]
    # Content-addressed: the same bytes are one stored file, and a second load gives the same records.
    assert test[1].image == train[0].image and Path(test[1].image).suffix == ".png"
    assert [e.to_dict() for e in load_examples(cfg(root), "test")] == [e.to_dict() for e in test]


def test_changed_bytes_get_a_new_path(tmp_path: Path) -> None:
    first = load_examples(
        cfg(saved_dict(tmp_path / "a", train=table([png(0)], [0]), test=table([png(1)], [1]))), "test"
    )
    again = load_examples(
        cfg(saved_dict(tmp_path / "b", train=table([png(0)], [0]), test=table([png(2)], [1]))), "test"
    )
    assert first[0].id == again[0].id and first[0].image != again[0].image


def test_parquet_shards_with_bytes_and_string_labels(tmp_path: Path) -> None:
    root = tmp_path / "pq"
    (root / "data").mkdir(parents=True)
    for name, rows in {
        "train-00000-of-00002": [(png(0), "red fox"), (png(1), "grey wolf")],
        "train-00001-of-00002": [(png(2), " red fox ")],
        "test-00000-of-00001": [(png(3), "grey wolf")],
    }.items():
        # Plain parquet (no datasets metadata): a binary column and a string column, named otherwise.
        t = pa.table({"img": [r[0] for r in rows], "species": [r[1] for r in rows], "n": [1] * len(rows)})
        pq.write_table(t, root / "data" / f"{name}.parquet")
    c = cfg(root, image_column="img", label_column="species")
    train = load_examples(c, "train")
    assert [(e.id, e.label) for e in train] == [
        ("train/0", "red fox"),
        ("train/1", "grey wolf"),
        ("train/2", "red fox"),
    ]
    assert Path(train[2].image).read_bytes() == png(2)
    assert [e.label for e in load_examples(c, "test")] == ["grey wolf"]


def test_parquet_written_by_datasets_keeps_class_names(tmp_path: Path) -> None:
    path = tmp_path / "all.parquet"
    table([png(i) for i in range(8)], [0, 1] * 4).to_parquet(str(path))
    train, test = (load_examples(cfg(path, test_fraction=0.25), s) for s in ("train", "test"))
    # One split only: a seeded per-class split, the same on every load.
    assert sorted(e.label for e in test) == ["cat", "dog"] and len(train) == 6
    assert {e.id for e in train} | {e.id for e in test} == {f"all/{i}" for i in range(8)}
    assert [e.id for e in load_examples(cfg(path, test_fraction=0.25), "test")] == [e.id for e in test]


def test_single_saved_dataset_and_chosen_splits(tmp_path: Path) -> None:
    table([png(i) for i in range(4)], [0, 1, 0, 1]).save_to_disk(str(tmp_path / "one"))
    assert len(load_examples(cfg(tmp_path / "one", test_fraction=0.5), "test")) == 2
    root = saved_dict(
        tmp_path / "ds", a=table([png(0), png(1)], [0, 1]), b=table([png(2)], [1]), c=table([png(3)], [0])
    )
    with pytest.raises(DataError, match=r"no train split in .* \(its splits are: a, b, c\); name the ones"):
        load_examples(cfg(root), "train")
    c = cfg(root, train_splits=["a", "c"], test_splits=["b"])
    assert [e.id for e in load_examples(c, "train")] == ["a/0", "a/1", "c/0"]
    assert [e.id for e in load_examples(c, "test")] == ["b/0"]
    with pytest.raises(
        DataError, match=r"data.test_splits names split 'test', but the dataset's splits are: a, b, c"
    ):
        load_examples(cfg(root, test_splits=["test"]), "test")


def test_unknown_columns_name_the_columns_that_exist(tmp_path: Path) -> None:
    root = saved_dict(tmp_path / "ds", train=table([png(0)], [0]), test=table([png(1)], [1]))
    with pytest.raises(
        DataError,
        match=r"no column 'img' \(data.image_column\); the columns are: image, label \(image columns: image\)",
    ):
        load_examples(cfg(root, image_column="img"), "train")
    with pytest.raises(
        DataError, match=r"no column 'species' \(data.label_column\); the columns are: image, label"
    ):
        load_examples(cfg(root, label_column="species"), "train")
    with pytest.raises(DataError, match=r"column 'label' holds ClassLabel.*not images"):
        load_examples(cfg(root, image_column="label", label_column="image"), "train")


def test_integer_labels_without_names_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image": [png(0)], "label": [3]}), tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"integers without class names: make it a ClassLabel"):
        load_examples(cfg(tmp_path), "train")


def test_bad_rows_stop_the_load_naming_row_and_column(tmp_path: Path, store: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png").read_bytes()
    cases = {
        "undecodable": (
            table([png(0), b"not an image"], [0, 1]),
            r"not a readable image .*\(row 1, column 'image'\)",
        ),
        "bomb": (table([png(0), bomb], [0, 1]), r"decompression bomb"),
        "unlabelled": (
            table([png(0), png(1)], [0, -1]),
            r"row 1: label -1 in column 'label' is not one of its 2 classes",
        ),
        "no label": (
            table([png(0), png(1)], ["cat", None], names=None),
            r"row 1: no label in column 'label'",
        ),
        "no image": (table([png(0), None], [0, 1]), r"row 1: no image in column 'image'"),
    }
    for name, (train, pattern) in cases.items():
        root = saved_dict(tmp_path / name, train=train, test=table([png(2)], [0]))
        with pytest.raises(DataError, match=pattern) as err:
            load_examples(cfg(root), "train")
        assert str(root / "train") in str(err.value) and "data.skip_bad=true" in str(err.value), name
    stored = [p.read_bytes() for p in store.rglob("*") if p.is_file()]
    # The good image is stored; the bad bytes are not.
    assert png(0) in stored and b"not an image" not in stored and bomb not in stored


def test_skip_bad_leaves_bad_rows_out_and_reports_them(tmp_path: Path) -> None:
    train = table([png(0), b"junk", png(1), png(2)], [0, 0, -1, 1])
    root = saved_dict(tmp_path / "ds", train=train, test=table([png(3)], [0]))
    report = load_split(cfg(root, skip_bad=True), "train")
    assert [(e.id, e.label) for e in report.examples] == [("train/0", "cat"), ("train/3", "dog")]
    reasons = [s.reason for s in report.skipped]
    assert len(reasons) == 2 and "row 1, column 'image'" in reasons[0] and "label -1" in reasons[1]
    assert all(s.file == str(root / "train") for s in report.skipped)


def path_rows(root: Path, paths: list[str], struct: bool = True) -> Path:
    """Parquet rows naming image files (save_to_disk would embed their bytes): Image structs or strings."""
    images = [{"bytes": None, "path": p} for p in paths] if struct else paths
    pq.write_table(pa.table({"image": images, "label": ["cat"] * len(paths)}), root / "train.parquet")
    pq.write_table(pa.table({"image": images[:1], "label": ["cat"]}), root / "test.parquet")
    return root


def test_stored_paths_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "pics").mkdir(parents=True)
    (root / "pics" / "a.png").write_bytes(png(0))
    (tmp_path / "outside.png").write_bytes(png(1))
    for struct in (True, False):
        [ex] = load_examples(cfg(path_rows(root, ["pics/a.png"], struct)), "test")
        assert ex.image == str((root / "pics" / "a.png").resolve())
    for bad in ("../outside.png", "pics/../../outside.png", str(tmp_path / "outside.png")):
        path_rows(root, ["pics/a.png", bad])
        with pytest.raises(DataError, match=r"row 1, column 'image': image path .* escapes the data root"):
            load_examples(cfg(root), "train")
    path_rows(root, ["pics/a.png", "pics/gone.png"])
    with pytest.raises(DataError, match=r"row 1, column 'image': image not found: .*gone.png"):
        load_examples(cfg(root), "train")
    # Stored as paths, images are checked like any loader's files: decoded when skip_bad is on.
    (root / "pics" / "bad.png").write_bytes(b"junk")
    path_rows(root, ["pics/a.png", "pics/bad.png"])
    assert [e.id for e in load_examples(cfg(root, skip_bad=True), "train")] == ["train/0"]


def test_hostile_index_files_cannot_leave_the_root(tmp_path: Path) -> None:
    root = saved_dict(tmp_path / "ds", train=table([png(0)], [0]), test=table([png(1)], [1]))
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "../elsewhere"]}))
    with pytest.raises(DataError, match=r"split folder '../elsewhere' escapes the data root"):
        load_examples(cfg(root), "train")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    state = json.loads((root / "test" / "state.json").read_text())
    state["_data_files"] = [{"filename": "../../outside.arrow"}]
    (root / "test" / "state.json").write_text(json.dumps(state))
    with pytest.raises(DataError, match=r"data file '../../outside.arrow' escapes the data root"):
        load_examples(cfg(root), "test")


def test_missing_datasets_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = saved_dict(tmp_path / "ds", train=table([png(0)], [0]), test=table([png(1)], [1]))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SelfsynthError, match=r"pip install 'selfsynth\[hf\]'"):
        load_examples(cfg(root), "train")


def test_column_settings_in_the_config() -> None:
    c = load_config(None, ["data.image_column=img", "data.train_splits=train,validation"], require=())
    assert c.data.image_column == "img" and c.data.train_splits == ["train", "validation"]
    with pytest.raises(ConfigError, match="two different columns"):
        load_config(None, ["data.image_column=label"], require=())


def test_data_inspect_reads_hf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = saved_dict(
        tmp_path / "ds", train=table([png(0), png(1), png(2)], [0, 1, 1]), test=table([png(3)], [1])
    )
    args = ["data", "inspect", "--format", "hf", "--root", str(root), "--check-images", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "hf" and out["per_class"] == {"cat": 1, "dog": 2} and out["skipped_count"] == 0
    assert main([*args[:-2], "--image-column", "picture"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no column 'picture'" in err[0] and "the columns are: image, label" in err[0]
