"""Citations per stage (Z*, training answers, evaluated answers) on hand-made answers with known concepts."""

from __future__ import annotations

import json

import pytest

from selfsynth.metrics.grounding import cite_phrases
from selfsynth.metrics.stage_grounding import StageGrounding, answer_grounding
from selfsynth.records import QA, Example

BANK = {
    "Tern": ["black cap", "orange beak", "forked tail", "short legs"],
    "Gull": ["grey wings", "yellow beak"],
}
# img1 shows black cap + forked tail and Z* chose black cap + orange beak (one of them wrong)
VISIBLE = {"img1": ["black cap", "forked tail"], "img2": ["short legs"]}
SELECTED = {"img1": ["black cap", "orange beak"], "img2": ["short legs", "forked tail"]}


def _train():
    return [Example(i, f"/{i}.png", "Tern", "train", {"visible_concepts": v}) for i, v in VISIBLE.items()]


def test_answer_grounding_against_visible_and_zstar():
    items = [
        ("img1", "Tern", ["black cap", "orange beak"]),  # 1 of 2 visible, 2 of 2 in Z*
        ("img2", "Tern", ["short legs", "grey wings"]),  # 1 of 2 visible, 1 in Z*, one another class's
        ("img3", "Tern", ["forked tail"]),  # neither V nor Z* known: counts only in the totals
    ]
    m = answer_grounding(items, BANK, visible=VISIBLE, selected=SELECTED)
    assert m["answers"] == 3 and m["cited_per_answer"] == pytest.approx(5 / 3)
    assert m["class_precision"] == pytest.approx(4 / 5)  # grey wings is a Gull concept
    assert m["visible_precision"] == pytest.approx(2 / 4)
    assert m["visible_recall"] == pytest.approx(2 / 3)
    assert m["grounded_rate"] == 0.0  # each of the two answers cites a concept its image lacks
    assert m["zstar_precision"] == pytest.approx(3 / 4)
    assert m["zstar_recall"] == pytest.approx(3 / 4)
    bare = answer_grounding(items, BANK)  # a dataset without visibility and a method without Z*
    assert "visible_precision" not in bare and "zstar_precision" not in bare and "grounded_rate" not in bare


def test_training_figures_leave_fallbacks_out_and_find_where_hallucinations_enter():
    g = StageGrounding.of(BANK, SELECTED, _train(), visibility=True, citer=None)
    pairs = [
        QA("img1#0", "/img1.png", "Why?", "A Tern: it has a black cap and a forked tail.", "Tern"),
        QA("img1#1", "/img1.png", "Why?", "A Tern: black cap, orange beak.", "Tern"),  # Z* wrong: copied
        QA("img2#0", "/img2.png", "What is this?", "This is an image of Tern.", "Tern", "fallback"),
    ]
    m = g.training(pairs)
    assert m["answers"] == 2 and m["fallback"] == 1
    assert m["visible_precision"] == pytest.approx(3 / 4)  # orange beak is the hallucination
    assert m["zstar_precision"] == pytest.approx(3 / 4)  # forked tail is visible but not in Z*
    assert m["grounded_rate"] == pytest.approx(1 / 2)
    z = g.zstar()  # the selection itself is where orange beak came from
    assert z["visible_precision"] == pytest.approx(2 / 4) and z["visible_recall"] == pytest.approx(2 / 3)
    assert z["cited_per_answer"] == 2.0 and "class_precision" not in z


def test_a_dataset_without_visibility_gets_the_zstar_figures_only():
    g = StageGrounding.of(BANK, SELECTED, _train(), visibility=False, citer=None)
    m = g.training([QA("img1#0", "/img1.png", "Why?", "A Tern: black cap, forked tail.", "Tern")])
    assert "visible_precision" not in m and m["zstar_precision"] == 0.5 and m["zstar_recall"] == 0.5
    assert StageGrounding.of(BANK, {}, _train(), visibility=False, citer=None).training([]) == {
        "answers": 0,
        "cited_per_answer": None,
        "class_precision": None,
        "fallback": 0,
    }


def test_the_datasets_citer_is_used():
    seen = []

    def citer(text, phrases):
        seen.append(text)
        return ["forked tail"]

    g = StageGrounding.of(BANK, SELECTED, _train(), visibility=True, citer=citer)
    m = g.training([QA("img1#0", "/img1.png", "Why?", "anything", "Tern")])
    assert seen == ["anything"] and m["visible_precision"] == 1.0 and m["zstar_precision"] == 0.0


def test_fill_reads_the_evaluated_samples_and_backfills_grounded_rate(tmp_path):
    rows = [
        {
            "id": "t1",
            "label": "Tern",
            "answer": "black cap, forked tail",
            "visible_concepts": VISIBLE["img1"],
        },
        # an older row without ``cited``: cited from its answer
        {
            "id": "t2",
            "label": "Tern",
            "answer": "short legs and yellow beak",
            "visible_concepts": ["short legs"],
        },
    ]
    rows[0]["cited"] = cite_phrases(rows[0]["answer"], [p for ps in BANK.values() for p in ps])
    (tmp_path / "round_2" / "evaluate").mkdir(parents=True)
    (tmp_path / "round_2" / "evaluate" / "samples.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    g = StageGrounding.of(BANK, SELECTED, _train(), visibility=True, citer=None)
    metrics = {"acc_strict": 1.0}  # a metrics.json written before grounded_rate existed
    pairs = [QA("img2#0", "/img2.png", "Why?", "A Tern with short legs.", "Tern")]
    g.fill(metrics, tmp_path / "round_2", "sample", pairs)
    by_stage = metrics["grounding_by_stage"]
    assert set(by_stage) == {"sample", "evaluate"}
    assert by_stage["sample"]["visible_precision"] == 1.0 and by_stage["sample"]["zstar_precision"] == 1.0
    ev = by_stage["evaluate"]
    assert ev["answers"] == 2 and ev["visible_precision"] == pytest.approx(3 / 4)
    assert ev["class_precision"] == pytest.approx(3 / 4) and "zstar_precision" not in ev  # test images: no Z*
    assert metrics["grounded_rate"] == pytest.approx(1 / 2)
    kept = {"grounded_rate": 0.9}
    g.fill(kept, tmp_path / "base")  # the evaluate stage's own value wins; no samples: no figures
    assert kept == {"grounded_rate": 0.9, "grounding_by_stage": {"evaluate": {}}}
