"""Accuracy, per-class, confusion, EE and CS pinned on hand-made answers."""

from __future__ import annotations

import numpy as np
import pytest
from metric_doubles import BagEncoder, FixedFluency

from selfsynth.metrics.answers import accuracy, answer_metrics, confusion
from selfsynth.metrics.explain import cognition_scores, explanation_flags

LABELS = ["Tern", "Arctic Tern", "Black Tern", "pneumonia", "normal", "Crème Brûlée Finch"]
BANK = {
    "Tern": ["black cap", "orange beak", "forked tail"],
    "Arctic Tern": ["blood red beak", "short legs"],
    "Black Tern": ["dark grey wings", "fluffy plumage"],
    "Crème Brûlée Finch": ["yellow breast", "conical beak"],
}


def _rows(*pairs: tuple[str, str]) -> list[dict]:
    return [{"id": str(i), "answer": a, "label": y} for i, (a, y) in enumerate(pairs)]


def test_accuracy_keeps_its_contract():
    acc = accuracy(["An Arctic Tern.", "no pneumonia here"], ["Tern", "pneumonia"], LABELS)
    assert acc == {"acc_substring": 1.0, "acc_strict": 0.0, "n": 2}
    assert accuracy([], [], LABELS) == {"acc_substring": 0.0, "acc_strict": 0.0, "n": 0}


def test_per_class_and_confusion_label_inside_label_negation_unicode():
    rows = _rows(
        ("This is an Arctic Tern.", "Tern"),  # substring yes, strict names Arctic Tern
        ("A Tern, not an Arctic Tern.", "Tern"),
        ("There is no pneumonia; the lungs look normal.", "pneumonia"),  # negated -> names "normal"
        ("No signs of pneumonia.", "normal"),  # names nothing
        ("I think it is a crème brûlée finch.", "Crème Brûlée Finch"),
    )
    m = answer_metrics(rows, labels=LABELS, bank={}, grounding=False)
    assert m["n"] == 5
    assert m["acc_substring"] == pytest.approx(4 / 5)  # the paper rule counts "no pneumonia"
    assert m["acc_strict"] == pytest.approx(2 / 5)
    assert [r["pred"] for r in rows] == ["Arctic Tern", "Tern", "normal", None, "Crème Brûlée Finch"]
    assert m["per_class"]["Tern"] == {"n": 2, "acc_substring": 1.0, "acc_strict": 0.5}
    assert "Black Tern" not in m["per_class"]  # no test rows
    conf = m["confusion"]
    assert conf["columns"][-1] == "none"
    row = conf["counts"][conf["labels"].index("Tern")]
    assert row[conf["columns"].index("Arctic Tern")] == 1 and row[conf["columns"].index("Tern")] == 1
    assert conf["counts"][conf["labels"].index("normal")][-1] == 1
    assert sum(map(sum, conf["counts"])) == 5


def test_confusion_adds_unknown_true_labels():
    rows = _rows(("A Tern.", "Sooty Tern"))
    rows[0]["pred"] = "Tern"
    conf = confusion(rows, ["Tern", "Sooty Tern"])
    assert conf["counts"] == [[0, 0, 0], [1, 0, 0]]
    m = answer_metrics(_rows(("A Tern.", "Sooty Tern")), labels=["Tern"], bank={}, grounding=False)
    assert "Sooty Tern" in m["confusion"]["labels"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("This is an image of Arctic Tern.", 0),
        ("This is an image of a Black Tern.", 0),  # colour word inside the label is not a reason
        ("It is a Tern, as the picture clearly shows.", 0),
        ("Tern", 0),
        ("", 0),
        ("This is a Tern because it has a black cap.", 1),
        ("It looks like an Arctic Tern: long thin wings.", 1),  # cue words, not in any concept
        ("A Black Tern with fluffy feathers.", 1),  # "fluffy" only matches a concept word
        ("This is a Crème Brûlée Finch; note the conical bill.", 1),
        ("Not a Tern; it has grey wings.", 1),
    ],
)
def test_explanation_existence_rule(answer, expected):
    assert explanation_flags([answer], LABELS, BANK) == [expected]


class _OneIdea:
    """Maps texts containing "shimmer" and the concept "iridescent feathers" to the same vector."""

    def encode(self, texts):
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 0 if ("shimmer" in t or "iridescent" in t) else 1 + i % 2] = 1.0
        return out


def test_explanation_existence_embedding_path():
    bank = {"Tern": ["iridescent feathers"]}
    answer = "A Tern; it has a shimmer."
    assert explanation_flags([answer], ["Tern"], bank) == [0]
    assert explanation_flags([answer], ["Tern"], bank, encoder=_OneIdea()) == [1]
    assert explanation_flags(["This is a Tern."], ["Tern"], bank, encoder=_OneIdea()) == [0]


def test_cognition_score_true_class_agreement():
    enc = BagEncoder()
    answers = [
        "This is a Tern because it has a black cap and an orange bill.",  # both clauses match Tern
        "This is a Tern with short legs.",  # Arctic Tern's concept: no agreement with Tern
        "This is an Arctic Tern with a black cap and short legs.",  # half; class name ignored
        "This is an image of Tern.",
        "A pneumonia.",
    ]
    truth = ["Tern", "Tern", "Tern", "Tern", "pneumonia"]
    cs = cognition_scores(answers, truth, LABELS, BANK, enc)
    assert cs[0] == pytest.approx(1.0)
    assert cs[1] == pytest.approx(0.0)
    assert cs[2] == pytest.approx(0.5)
    assert cs[3] == 0.0
    assert cs[4] is None  # no concepts for the class


def test_answer_metrics_all_fields_and_fluency():
    rows = _rows(
        ("This is a Tern because it has a black cap and an orange bill.", "Tern"),
        ("This is an image of Tern.", "Tern"),
    )
    flu = FixedFluency({rows[0]["answer"]: 10.0, rows[1]["answer"]: 1000.0})
    m = answer_metrics(rows, labels=LABELS, bank=BANK, encoder=BagEncoder(), fluency=flu, grounding=False)
    assert m["ee"] == 0.5
    assert m["cs"] == pytest.approx(0.5)
    assert m["cs_explained"] == pytest.approx(1.0)
    assert m["fs"] == pytest.approx(100.0)  # geometric mean of 10 and 1000
    assert m["cited_per_answer"] == pytest.approx(1.0)
    assert rows[0]["cited"] == ["black cap", "orange beak"] and rows[1]["cited"] == []
    assert "ground_precision" not in m and "cited_visible" not in rows[0]
    assert {"pred", "correct_substring", "correct_strict", "ee", "cs", "ppl"} <= set(rows[0])


def test_answer_metrics_without_models_and_empty():
    rows = _rows(("A Tern with a black cap.", "Tern"))
    m = answer_metrics(rows, labels=LABELS, bank=BANK, grounding=False)
    assert "cs" not in m and "fs" not in m and m["ee"] == 1.0
    empty = answer_metrics([], labels=LABELS, bank=BANK, grounding=True)
    assert empty["n"] == 0 and empty["ee"] is None


def test_fluency_skips_unscorable_answers():
    class Nan:
        def perplexity(self, texts):
            return [float("nan"), 4.0]

    rows = _rows(("", "Tern"), ("A Tern.", "Tern"))
    m = answer_metrics(rows, labels=LABELS, bank={}, fluency=Nan(), grounding=False)
    assert m["fs"] == pytest.approx(4.0)
    assert rows[0]["ppl"] is None


def test_judge_double_is_used():
    class Judge:
        def score(self, rows, bank):
            return [{"ee": 1, "cs": 0.8}, {"ee": 0, "cs": None}]

    rows = _rows(("A Tern with a black cap.", "Tern"), ("Tern.", "Tern"))
    m = answer_metrics(rows, labels=LABELS, bank=BANK, grounding=False, judge=Judge())
    assert m["ee_judge"] == 0.5 and m["cs_judge"] == pytest.approx(0.8)
    assert rows[1]["cs_judge"] is None
