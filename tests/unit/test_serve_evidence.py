"""Cited-concept evidence: which concepts an answer cites, the highlight segments, where banks are found."""

from __future__ import annotations

import json

import pytest

from selfsynth.errors import DataError
from selfsynth.serve.evidence import EvidenceFinder, locate_concepts

BANK = {
    "Scarlet Finch": ["bright red crown", "white wing bars", "short conical beak"],
    "Blue Robin": ["blue back", "white wing bars", "long tail"],
}


def _joined(ev) -> str:
    return "".join(t for t, _ in ev.segments)


def test_cites_concepts_and_label_in_order_of_appearance():
    answer = "This is a Scarlet Finch: it has White wing-bars and a bright red crown."
    ev = EvidenceFinder(BANK)(answer)
    assert ev.cited == ["Scarlet Finch", "white wing bars", "bright red crown"]
    assert ev.kinds == {"Scarlet Finch": "label", "white wing bars": "concept", "bright red crown": "concept"}
    assert ev.labels["white wing bars"] == ["Scarlet Finch", "Blue Robin"]
    assert _joined(ev) == answer
    marked = [(t, c) for t, c in ev.segments if c]
    assert marked == [
        ("Scarlet Finch", "Scarlet Finch"),
        ("White wing-bars", "white wing bars"),
        ("bright red crown", "bright red crown"),
    ]


def test_words_of_a_phrase_must_share_a_clause():
    # "red" and "crown" are both present, but in different clauses: not the concept "bright red crown".
    ev = EvidenceFinder(BANK)("The crown is dark. Its bright red tail is short, with a long tail.")
    assert "bright red crown" not in ev.cited
    assert ev.cited == ["long tail"]
    assert [t for t, c in ev.segments if c] == ["long tail"]  # the first "tail" has no "long" in its clause


def test_plurals_and_spelling_fold():
    ev = EvidenceFinder({"Gray Jay": ["grey crowns"]})("A GRAY crown is visible.")
    assert ev.cited == ["grey crowns"]
    assert [t for t, c in ev.segments if c] == ["GRAY crown"]


def test_no_bank_or_no_match_leaves_the_answer_whole():
    assert EvidenceFinder(None)("a bird").segments == [("a bird", None)]
    assert not EvidenceFinder({})
    ev = EvidenceFinder(BANK)("nothing to see")
    assert ev.cited == [] and ev.segments == [("nothing to see", None)] and ev.detail() == []


def test_detail_and_segments_json_shapes():
    ev = EvidenceFinder(BANK)("a blue back")
    assert ev.detail() == [{"concept": "blue back", "kind": "concept", "labels": ["Blue Robin"]}]
    assert ev.segments_json() == [
        {"text": "a ", "concept": None},
        {"text": "blue back", "concept": "blue back"},
    ]


def test_locate_explicit_file_wins_and_must_parse(tmp_path):
    bank = tmp_path / "c.json"
    bank.write_text(json.dumps(BANK))
    assert locate_concepts(tmp_path / "model", bank) == (BANK, str(bank))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        locate_concepts(tmp_path, bad)


def test_locate_from_selfsynth_json_inline_and_by_path(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "selfsynth.json").write_text(json.dumps({"concepts": {"A": ["x y"]}}))
    assert locate_concepts(model)[0] == {"A": ["x y"]}
    (model / "bank.json").write_text(json.dumps({"B": ["z"]}))
    (model / "selfsynth.json").write_text(json.dumps({"concepts": "bank.json"}))
    assert locate_concepts(model) == ({"B": ["z"]}, str(model / "bank.json"))
    (model / "selfsynth.json").write_text(json.dumps({"concepts": 3}))
    with pytest.raises(DataError, match="selfsynth.json"):
        locate_concepts(model)


def test_locate_walks_up_to_the_run_or_demo_folder(tmp_path):
    merged = tmp_path / "runs" / "r1" / "round_2" / "finetune" / "merged"
    merged.mkdir(parents=True)
    assert locate_concepts(merged) == ({}, "")
    (tmp_path / "runs" / "r1" / "concepts").mkdir()
    path = tmp_path / "runs" / "r1" / "concepts" / "concepts.json"
    path.write_text(json.dumps(BANK))
    assert locate_concepts(merged)[0] == BANK
    path.write_text("[]")  # a broken discovered file is skipped, not fatal
    assert locate_concepts(merged) == ({}, "")
    demo = tmp_path / "demo"
    (demo / "world").mkdir(parents=True)
    (demo / "world" / "concepts.json").write_text(json.dumps({"C": ["d"]}))
    (demo / "model").mkdir()
    assert locate_concepts(demo / "model")[0] == {"C": ["d"]}
