"""Bad data gives one clear error line naming the culprit (exit code 2), or is skipped and reported."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from fixtures_data import (
    build_aircraft,
    build_csv,
    build_cub,
    build_dogs,
    build_finer,
    build_ham,
    build_imagefolder,
    build_jsonl,
    make_image,
)

from selfsynth.cli import main
from selfsynth.config import DataConfig
from selfsynth.data import load_split
from selfsynth.errors import DataError


def error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``selfsynth data inspect``; it must fail with exit 2 and exactly one stderr line."""
    assert main(["data", "inspect", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfsynth: error: "), captured.err
    assert captured.out == ""
    return lines[0]


def replace_line(path: Path, n: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[n - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_cub(tmp_path)
    (root / "images/001.Black_footed_Albatross/Black_footed_Albatross_0002.jpg").unlink()
    msg = error_line(capsys, "--format", "cub", "--root", str(root))
    assert "images.txt:2: image not found" in msg and "Black_footed_Albatross_0002.jpg" in msg


def test_corrupt_image_needs_check_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_imagefolder(tmp_path)
    (root / "train/cat/cat0.png").write_bytes(b"not a png at all")
    assert main(["data", "inspect", "--format", "imagefolder", "--root", str(root), "--json"]) == 0
    capsys.readouterr()
    msg = error_line(capsys, "--format", "imagefolder", "--root", str(root), "--check-images")
    assert "cat0.png" in msg and "not a readable image" in msg and "'train/cat/cat0.png'" in msg
    assert "data.skip_bad=true" in msg


def test_truncated_jpeg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_cub(tmp_path)
    img = root / "images/002.Laysan_Albatross/Laysan_Albatross_0006.jpg"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
        img, quality=95
    )
    img.write_bytes(img.read_bytes()[:2000])
    msg = error_line(capsys, "--format", "cub", "--root", str(root), "--split", "test", "--check-images")
    assert "Laysan_Albatross_0006.jpg" in msg and "corrupt or truncated" in msg


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_path_escaping_the_root(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_jsonl(tmp_path)
    outside = make_image(tmp_path / "outside.png")
    rel = "../outside.png" if where == "dotdot" else str(outside)
    with (root / "train.jsonl").open("a") as f:
        f.write(json.dumps({"image": rel, "label": "red fox"}) + "\n")
    msg = error_line(capsys, "--format", "jsonl", "--root", str(root))
    assert "train.jsonl:5:" in msg and "escapes the data root" in msg and "outside.png" in msg


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_symlink_resolving_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_imagefolder(tmp_path)
    outside = make_image(tmp_path / "secret.png")
    (root / "train/cat/link.png").symlink_to(outside)
    msg = error_line(capsys, "--format", "imagefolder", "--root", str(root))
    assert "train/cat/link.png" in msg and "escapes the data root" in msg


def test_unknown_class_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_cub(tmp_path)
    replace_line(root / "image_class_labels.txt", 2, "2 9")
    msg = error_line(capsys, "--format", "cub", "--root", str(root))
    assert "image_class_labels.txt:2: unknown class id 9" in msg


def test_unknown_dog_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_dogs(tmp_path, train_labels=[1, 1, 2, 7])
    msg = error_line(capsys, "--format", "dogs", "--root", str(root))
    assert "train_list.mat" in msg and "unknown label 7" in msg and "n02085782_1.jpg" in msg


def test_unknown_aircraft_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_aircraft(tmp_path)
    replace_line(root / "data/images_variant_test.txt", 2, "1000006 747-400")
    msg = error_line(capsys, "--format", "aircraft", "--root", str(root), "--split", "test")
    assert "images_variant_test.txt:2: unknown label '747-400'" in msg


def test_unknown_diagnosis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_ham(tmp_path)
    replace_line(root / "HAM10000_metadata.csv", 4, "HAM_0000002,ISIC_0000003,xyz,histo,40.0,male,back")
    msg = error_line(capsys, "--format", "ham10000", "--root", str(root))
    assert "HAM10000_metadata.csv:4: unknown diagnosis 'xyz'" in msg


def test_empty_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_imagefolder(tmp_path)
    for p in (root / "test").rglob("*.png"):
        p.unlink()
    msg = error_line(capsys, "--format", "imagefolder", "--root", str(root), "--split", "test")
    assert "test split" in msg and "is empty" in msg


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("3 a b", "images.txt:3: expected '<image_id> <path>'"),
        ("x3 002.Laysan_Albatross/a.jpg", "images.txt:3: id 'x3' is not an integer"),
    ],
)
def test_malformed_index_line(
    line: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_cub(tmp_path)
    replace_line(root / "images.txt", 3, line)
    assert expect in error_line(capsys, "--format", "cub", "--root", str(root))


def test_malformed_jsonl_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_jsonl(tmp_path)
    replace_line(root / "test.jsonl", 2, '{"image": "img/0_2.png", "label": ')
    msg = error_line(capsys, "--format", "jsonl", "--root", str(root), "--split", "test")
    assert "test.jsonl:2: malformed JSON line" in msg


def test_csv_wrong_column_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_csv(tmp_path)
    replace_line(root / "train.csv", 3, "0-1,img/0_1.png")
    msg = error_line(capsys, "--format", "csv", "--root", str(root))
    assert "train.csv:3: expected 4 columns" in msg and "got 2" in msg


def test_finer_bad_json_and_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_finer(tmp_path)
    (root / "aircraft-test.json").write_text('[{"id": 1, "img_path": "images/x.jpg"}]')
    assert "aircraft-test.json: item 0: missing 'label'" in error_line(
        capsys, "--format", "finer", "--root", str(root), "--split", "test"
    )
    (root / "aircraft-test.json").write_text("[{")
    assert "aircraft-test.json:1: not valid JSON" in error_line(
        capsys, "--format", "finer", "--root", str(root), "--split", "test"
    )


def test_corrupt_mat_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_dogs(tmp_path)
    (root / "test_list.mat").write_bytes(b"garbage" * 30)
    msg = error_line(capsys, "--format", "dogs", "--root", str(root), "--split", "test")
    assert "test_list.mat: not a readable MATLAB file" in msg
    scipy.io.savemat(root / "test_list.mat", {"files": np.zeros(2)})
    msg = error_line(capsys, "--format", "dogs", "--root", str(root), "--split", "test")
    assert "no 'file_list' variable (found: files)" in msg


def test_unknown_format_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = error_line(capsys, "--format", "cubb", "--root", str(tmp_path))
    assert "unknown data format 'cubb'" in msg and "did you mean 'cub'" in msg


def test_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "data root not found" in error_line(capsys, "--format", "cub", "--root", str(tmp_path / "nope"))


def test_skip_bad_skips_and_reports_each_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = build_cub(tmp_path)
    replace_line(root / "image_class_labels.txt", 1, "1 9")
    replace_line(root / "images.txt", 2, "two 001.Black_footed_Albatross/x.jpg")
    (root / "images/002.Laysan_Albatross/Laysan_Albatross_0004.jpg").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING):
        assert (
            main(
                [
                    "data",
                    "inspect",
                    "--format",
                    "cub",
                    "--root",
                    str(root),
                    "--skip-bad",
                    "--check-images",
                    "--json",
                ]
            )
            == 0
        )
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 1 and out["skipped_count"] == 3
    reasons = " | ".join(s["reason"] for s in out["skipped"])
    assert (
        "unknown class id 9" in reasons
        and "'two' is not an integer" in reasons
        and "Laysan_Albatross_0004" in reasons
    )
    assert {s["line"] for s in out["skipped"]} >= {1, 2}
    assert sum("skipping bad record" in r.message for r in caplog.records) == 3
    assert any("skipped 3 bad records" in r.getMessage() for r in caplog.records)


def test_skip_bad_api_report_and_all_bad_is_still_an_error(tmp_path: Path) -> None:
    root = build_jsonl(tmp_path)
    (root / "test.jsonl").write_text('{"image": "img/none.png", "label": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"test split .* is empty \(2 bad records were skipped\)"):
        load_split(DataConfig(format="jsonl", root=str(root), skip_bad=True), "test")
    report = load_split(DataConfig(format="jsonl", root=str(root), skip_bad=True), "train")
    assert len(report.examples) == 4 and report.skipped == []


def test_duplicate_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_jsonl(tmp_path)
    with (root / "train.jsonl").open("a") as f:
        f.write(json.dumps({"id": "0-0", "image": "img/0_2.png", "label": "red fox"}) + "\n")
    assert "duplicate id '0-0'" in error_line(capsys, "--format", "jsonl", "--root", str(root))


def test_bad_split_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fixtures_data import build_pld

    root = build_pld(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["img_0_0.JPG", "nope.jpg"], "test": []}))
    msg = error_line(capsys, "--format", "pld", "--root", str(root), "--split-file", str(split))
    assert "split.json: 1 entries match no image" in msg and "nope.jpg" in msg


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_symlinked_class_folder_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_imagefolder(tmp_path)
    make_image(tmp_path / "elsewhere/a.png")
    (root / "train/bird").symlink_to(tmp_path / "elsewhere")
    msg = error_line(capsys, "--format", "imagefolder", "--root", str(root))
    assert "class folder 'train/bird' escapes the data root" in msg
    assert (
        main(["data", "inspect", "--format", "imagefolder", "--root", str(root), "--skip-bad", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 4 and out["skipped_count"] == 1


def test_symlinked_root_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_imagefolder(tmp_path)
    (tmp_path / "alias").symlink_to(root)
    assert (
        main(["data", "inspect", "--format", "imagefolder", "--root", str(tmp_path / "alias"), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["images"] == 4
