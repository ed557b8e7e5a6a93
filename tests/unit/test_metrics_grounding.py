"""Concept citation and grounding precision / recall / hallucination on hand-made answers."""

from __future__ import annotations

import pytest

from selfsynth.metrics.answers import answer_metrics
from selfsynth.metrics.grounding import cite_phrases, grounding

BANK = {
    "Tern": ["black cap", "orange beak", "forked tail", "short legs"],
    "Arctic Tern": ["blood red beak", "grey wings"],
    "Finch": ["bright red crown", "red crown", "black and white striped tail", "yellow breast"],
    "Hawk": ["large, hooked bill, typically dark gray"],
}
PHRASES = [p for ps in BANK.values() for p in ps]


@pytest.mark.parametrize(
    ("text", "cited"),
    [
        ("This is a Tern because it has a black cap and an orange bill.", ["black cap", "orange beak"]),
        ("Its legs are short.", ["short legs"]),  # word order is free inside a clause
        ("It has short legs and a forked tail.", ["forked tail", "short legs"]),
        ("Slate-grey wings.", ["grey wings"]),  # grey/gray and plurals fold
        ("A gray wing.", ["grey wings"]),
        ("a red crown", ["red crown"]),
        ("a bright red crown", ["bright red crown"]),  # the longer phrase subsumes "red crown"
        ("red wings and a black crown", []),  # words of two phrases in different clauses
        ("its tail is black and white and striped", ["black and white striped tail"]),
        ("The bill is large and hooked, dark grey.", ["large, hooked bill, typically dark gray"]),
        ("This is an image of a Tern.", []),
    ],
)
def test_cite_phrases(text, cited):
    assert cite_phrases(text, PHRASES) == cited


def test_cite_phrases_unicode():
    assert cite_phrases("Une crête rouge vif.", ["crête rouge", "bec noir"]) == ["crête rouge"]


def test_grounding_micro_macro_and_hallucination():
    rows = [
        # cites 2: black cap (visible), orange beak (not visible, own class) -> P 1/2, R 1/2
        {
            "answer": "A Tern: black cap, orange beak.",
            "label": "Tern",
            "visible_concepts": ["black cap", "forked tail"],
        },
        # cites blood red beak (another class) -> P 0, R 0
        {"answer": "A Tern with a blood red beak.", "label": "Tern", "visible_concepts": ["short legs"]},
        # cites nothing -> precision undefined, recall 0
        {"answer": "This is a Tern.", "label": "Tern", "visible_concepts": ["black cap"]},
        # no visibility info: citations only
        {"answer": "A Tern with a black cap.", "label": "Tern", "visible_concepts": None},
    ]
    m = grounding(rows, BANK, citer=cite_phrases)
    assert m["ground_n"] == 3
    assert m["ground_precision"] == pytest.approx(1 / 3)
    assert m["ground_recall"] == pytest.approx(1 / 4)
    assert m["halluc_rate"] == pytest.approx(2 / 3)
    assert m["halluc_other_rate"] == pytest.approx(1 / 3)
    assert m["ground_precision_macro"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["ground_recall_macro"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert rows[0]["cited_visible"] == ["black cap"] and rows[0]["hallucinated"] == ["orange beak"]
    assert rows[1]["hallucinated"] == ["blood red beak"]
    assert rows[2]["precision"] is None and rows[2]["recall"] == 0.0
    assert rows[3]["cited"] == ["black cap"] and "precision" not in rows[3]


def test_grounding_undefined_when_nothing_is_cited():
    rows = [{"answer": "This is a Tern.", "label": "Tern", "visible_concepts": ["black cap"]}]
    m = grounding(rows, BANK, citer=cite_phrases)
    assert m["ground_precision"] is None and m["halluc_rate"] is None
    assert m["ground_recall"] == 0.0
    assert grounding([{"answer": "x", "label": "Tern"}], BANK, citer=cite_phrases) == {}


def test_answer_metrics_grounding_with_a_custom_citer():
    rows = [{"answer": "A Tern: black cap.", "label": "Tern", "visible_concepts": ["black cap"]}]
    m = answer_metrics(rows, labels=list(BANK), bank=BANK, grounding=True, citer=cite_phrases)
    assert m["ground_precision"] == 1.0 and m["ground_recall"] == 1.0 and m["halluc_rate"] == 0.0


def test_grounding_cites_by_word_overlap_unless_the_dataset_brings_a_citer():
    from selfsynth.data import get_capabilities

    rows = [{"answer": "A Finch with a scarlet cap.", "label": "Finch", "visible_concepts": ["red crown"]}]
    assert grounding([dict(r) for r in rows], BANK)["ground_precision"] is None  # nothing cited
    world = get_capabilities("world")
    m = grounding(rows, BANK, citer=world.citer, with_visibility=world.visibility)
    assert rows[0]["cited"] and m["ground_n"] == 1
    assert get_capabilities("cub").citer is None and not get_capabilities("cub").visibility


def _grounded_rows():
    return [
        # two cited, both visible: grounded
        {
            "answer": "A Tern: black cap, forked tail.",
            "label": "Tern",
            "visible_concepts": ["black cap", "forked tail"],
        },
        # two cited, one of them hallucinated: not grounded
        {"answer": "A Tern: black cap, orange beak.", "label": "Tern", "visible_concepts": ["black cap"]},
        # one cited and visible: below GROUNDED_MIN_CITED
        {
            "answer": "A Tern with a black cap.",
            "label": "Tern",
            "visible_concepts": ["black cap", "short legs"],
        },
        # nothing cited (label only): not grounded
        {"answer": "This is a Tern.", "label": "Tern", "visible_concepts": ["black cap"]},
        # three cited, all visible: grounded
        {
            "answer": "A Tern: black cap, forked tail, short legs.",
            "label": "Tern",
            "visible_concepts": ["black cap", "forked tail", "short legs", "orange beak"],
        },
        # no visibility: left out of the rate
        {"answer": "A Tern: black cap, forked tail.", "label": "Tern", "visible_concepts": None},
    ]


def test_grounded_rate_needs_enough_citations_all_visible():
    from selfsynth.metrics.grounding import GROUNDED_MIN_CITED, grounded_rate

    assert GROUNDED_MIN_CITED == 2
    rows = _grounded_rows()
    m = grounding(rows, BANK, citer=cite_phrases)
    assert [r.get("grounded") for r in rows] == [True, False, False, False, True, None]
    assert m["grounded_rate"] == pytest.approx(2 / 5)
    # recomputed from the rows' recorded fields (an older samples.jsonl), without citing again
    assert grounded_rate(rows) == pytest.approx(2 / 5)
    assert grounded_rate([{"answer": "x", "label": "Tern", "visible_concepts": ["black cap"]}]) is None


def test_grounded_rate_moves_where_ee_saturates():
    rows = _grounded_rows()[:3]  # every answer gives a visual reason: EE = 1
    m = answer_metrics(rows, labels=list(BANK), bank=BANK, grounding=True, citer=cite_phrases)
    assert m["ee"] == 1.0 and m["grounded_rate"] == pytest.approx(1 / 3)
    assert [r["grounded"] for r in rows] == [True, False, False]
    off = answer_metrics([dict(r) for r in rows], labels=list(BANK), bank=BANK, grounding=False)
    assert "grounded_rate" not in off  # no visibility, no rate
