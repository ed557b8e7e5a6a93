"""Hostile image files: a decompression bomb, a truncated JPEG, an EPS file named .jpg.

Each must be a DataError naming the file wherever an image is opened from disk; with
``data.skip_bad`` the loader decodes every image up front and leaves the bad ones out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_data import EPS, bomb_png, build_imagefolder, truncated_jpeg
from PIL import Image

from selfsynth.config import DataConfig
from selfsynth.data import load_split
from selfsynth.data.checks import decode_image, verify_image
from selfsynth.errors import DataError
from selfsynth.models.chat import open_image


@pytest.fixture
def bad_folder(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = build_imagefolder(tmp_path)
    cat = root / "train" / "cat"
    bad = {
        "bomb": bomb_png(cat / "bomb.png"),
        "truncated": truncated_jpeg(cat / "cut.jpg"),
        "eps": cat / "vector.jpg",
    }
    bad["eps"].write_bytes(EPS)
    return root, bad


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bomb", "decompression bomb"),
        ("truncated", "corrupt or truncated"),
        ("eps", "not JPEG, PNG"),
    ],
)
def test_every_opener_turns_a_bad_image_into_a_data_error_naming_it(
    kind: str, reason: str, bad_folder: tuple[Path, dict[str, Path]]
) -> None:
    path = bad_folder[1][kind]
    for opener in (decode_image, verify_image, open_image):
        with pytest.raises(DataError, match=reason) as e:
            opener(path)
        assert str(path) in str(e.value) and "data.skip_bad=true" in str(e.value)


def test_pixel_limit_applies_below_pillows_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    assert decode_image(path).size == (8, 8)
    # 64 pixels: over the limit, yet under twice it, where Pillow itself only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(DataError, match="8x8 pixels is over the 50"),
    ):
        decode_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    with pytest.raises(DataError, match="decompression bomb"):
        open_image(path)


def test_without_skip_bad_loading_checks_existence_only_unless_asked(
    bad_folder: tuple[Path, dict[str, Path]],
) -> None:
    root, bad = bad_folder
    cfg = DataConfig(format="imagefolder", root=str(root))
    assert len(load_split(cfg, "train").examples) == 7  # bad files are found, not yet opened
    with pytest.raises(DataError, match="data.skip_bad=true") as e:
        load_split(cfg, "train", check_images=True)
    assert any(str(p) in str(e.value) for p in bad.values())


def test_skip_bad_decodes_every_image_at_load_and_reports_the_bad_ones(
    bad_folder: tuple[Path, dict[str, Path]],
) -> None:
    root, bad = bad_folder
    report = load_split(DataConfig(format="imagefolder", root=str(root), skip_bad=True), "train")
    assert sorted(Path(e.image).name for e in report.examples) == [
        "cat0.png",
        "cat1.png",
        "dog0.png",
        "dog1.png",
    ]
    assert {s.file for s in report.skipped} == {str(p) for p in bad.values()}
    assert report.summary()["skipped_count"] == 3
    reasons = " | ".join(s.reason for s in report.skipped)
    assert (
        "decompression bomb" in reasons and "corrupt or truncated" in reasons and "not JPEG, PNG" in reasons
    )
    for ex in report.examples:  # what is left opens in a stage
        assert open_image(ex.image).mode == "RGB"
