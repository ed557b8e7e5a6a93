"""Concept banks: both file layouts, round trip, and validation that lists every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfsynth.data import load_concept_bank, save_concept_bank, validate_concept_bank
from selfsynth.errors import DataError

BANK = {
    "Laysan Albatross": ["white head", "dark wings", "pink bill"],
    "Black footed Albatross": ["dark brown body", "black feet", "white ring at bill base"],
}


def test_plain_layout_round_trip(tmp_path: Path) -> None:
    save_concept_bank(tmp_path / "c.json", BANK)
    assert load_concept_bank(tmp_path / "c.json") == BANK
    validate_concept_bank(BANK, ["Laysan Albatross", "Black footed Albatross"])


def test_paper_layout(tmp_path: Path) -> None:
    paper = {str(i): {"name": k, "visual_features": v} for i, (k, v) in enumerate(BANK.items(), 1)}
    (tmp_path / "c.json").write_text(json.dumps(paper))
    assert load_concept_bank(tmp_path / "c.json") == BANK


def test_whitespace_is_normalised(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({" fox ": ["  red\n fur ", "bushy tail", "pointed ears"]}))
    assert load_concept_bank(tmp_path / "c.json") == {"fox": ["red fur", "bushy tail", "pointed ears"]}


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (["a"], "expected a JSON object"),
        ({"fox": "red fur"}, "'fox': expected a list of concept strings"),
        ({"fox": ["red fur", 3]}, "'fox': concept 2 is 3, not a string"),
        ({"1": {"visual_features": []}}, "entry '1': missing 'name'"),
        ({"1": {"name": "fox"}}, "entry '1' (fox): missing 'visual_features'"),
        (
            {"1": {"name": "fox", "visual_features": []}, "2": {"name": "fox", "visual_features": []}},
            "'fox' appears twice",
        ),
    ],
)
def test_malformed_files(data: object, expect: str, tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_concept_bank(tmp_path / "c.json")
    assert expect in str(err.value) and "c.json" in str(err.value)


def test_not_json(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{\n  'fox': []\n}")
    with pytest.raises(DataError, match=r"c\.json:2: not valid JSON"):
        load_concept_bank(tmp_path / "c.json")


def test_validation_lists_every_problem() -> None:
    bank = {
        "fox": ["red fur", "Red  Fur", "bushy tail", ""],
        "wolf": ["grey fur"],
        "owl": ["big eyes", "", "tufts"],
    }
    with pytest.raises(DataError) as err:
        validate_concept_bank(bank, ["fox", "wolf", "owl", "lynx", "bear"], source="bank.json")
    msg = str(err.value)
    assert msg.startswith("bank.json: ") and "\n" not in msg
    assert "no concepts for 2 label(s): bear, lynx" in msg
    assert "fewer than 3 concepts: owl (2), wolf (1)" in msg
    assert "duplicate concepts (ignoring case): fox: 'Red  Fur'" in msg
    assert "empty concept strings in: fox, owl" in msg


def test_min_concepts_setting_and_extra_labels_are_fine() -> None:
    validate_concept_bank({"wolf": ["grey fur"], "unused": ["a", "b", "c"]}, ["wolf"], min_concepts=1)
    with pytest.raises(DataError, match="fewer than 2 concepts: wolf"):
        validate_concept_bank({"wolf": ["grey fur"]}, ["wolf"], min_concepts=2)
