"""``selfsynth data inspect`` and ``selfsynth data validate-concepts`` end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_data import build_aircraft, build_cub, build_pld, build_world

from selfsynth.cli import main


def test_inspect_readable_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_cub(tmp_path)
    assert main(["data", "inspect", "--format", "cub", "--root", str(root.parent), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "cub test split" in out and "images   2" in out and "classes  2" in out
    assert "Laysan Albatross" in out


def test_inspect_label_level_and_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_aircraft(tmp_path)
    assert (
        main(
            [
                "data",
                "inspect",
                "--format",
                "aircraft",
                "--root",
                str(root),
                "--label-level",
                "manufacturer",
                "--max-per-class",
                "1",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["per_class"] == {"Airbus": 1, "Boeing": 1}


def test_inspect_bad_label_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_aircraft(tmp_path)
    assert (
        main(["data", "inspect", "--format", "aircraft", "--root", str(root), "--label-level", "model"]) == 2
    )
    assert "data.label_level='model' is not one of variant, family, manufacturer" in capsys.readouterr().err


def test_inspect_readable_lists_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_pld(tmp_path)
    (root / "Tomato___Early_blight/img_0_0.JPG").write_bytes(b"")
    assert (
        main(["data", "inspect", "--format", "pld", "--root", str(root), "--skip-bad", "--check-images"]) == 0
    )
    out = capsys.readouterr().out
    assert "skipped  1 bad records" in out and "img_0_0.JPG" in out


def test_validate_concepts_world_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_world(tmp_path)
    assert main(["data", "validate-concepts", "--format", "world", "--root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["labels"] == 2 and out["concepts_total"] == 6


def test_validate_concepts_reports_missing_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_world(tmp_path)
    bank = tmp_path / "bank.json"
    bank.write_text(
        json.dumps({"1": {"name": "azure finch", "visual_features": ["blue crown", "blue crown"]}})
    )
    assert (
        main(["data", "validate-concepts", "--format", "world", "--root", str(root), "--concepts", str(bank)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bank.json: " in err
    assert (
        "no concepts for 1 label(s): crimson tit" in err and "fewer than 3 concepts: azure finch (2)" in err
    )
    assert "duplicate concepts (ignoring case): azure finch: 'blue crown'" in err


def test_validate_concepts_needs_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_pld(tmp_path)
    assert main(["data", "validate-concepts", "--format", "pld", "--root", str(root)]) == 2
    assert "pass --concepts FILE" in capsys.readouterr().err
