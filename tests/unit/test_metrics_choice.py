"""Multiple-choice scoring: reading a choice, the shared greedy loop, and option likelihood."""

from __future__ import annotations

import pytest

from selfsynth.metrics.choice import (
    Choice,
    answer_choices,
    choice_accuracy,
    likeliest_options,
    parse_letter,
    read_choice,
)

OPTIONS = {"A": "red", "B": "green", "C": "dark red", "D": "blue"}


class ScriptedBackend:
    """Answers each prompt from a script; records every generate and answer_logprobs call."""

    def __init__(self, answers: dict[str, str], scores: dict[str, float] | None = None) -> None:
        self.answers = answers
        self.scores = scores or {}
        self.calls: list[dict] = []

    def generate(self, images, prompts, **kw):
        self.calls.append({"images": list(images), "prompts": list(prompts), **kw})
        return [[self.answers[p]] * kw["n"] for p in prompts]

    def answer_logprobs(self, images, questions, answers, *, batch_size=32):
        self.calls.append({"images": list(images), "questions": list(questions), "answers": list(answers)})
        return [self.scores[a] for a in answers]


def _items() -> list[dict]:
    return [
        {"image": "a.png", "question": "q1", "options": OPTIONS, "answer": "B"},  # a stated letter
        {"image": "b.png", "question": "q2", "options": OPTIONS, "answer": "D"},  # an option's text
        {"image": "c.png", "question": "q3", "options": OPTIONS, "answer": "A"},  # two options named
        {"image": "d.png", "question": "q4", "options": OPTIONS, "answer": "C"},  # a wrong letter
        {"image": "e.png", "question": "q5", "options": OPTIONS, "answer": "C"},  # longest text wins
    ]


SCRIPT = {
    "q1": "The answer is B.",
    "q2": "  It is blue. ",
    "q3": "red or blue",
    "q4": "A",
    "q5": "Answer: dark red.",
}


def test_answer_choices_reads_each_answer_and_counts_right():
    backend = ScriptedBackend(SCRIPT)
    choices = answer_choices(
        backend,
        _items(),
        image_for=lambda r: r["image"],
        prompt_for=lambda r: r["question"],
        batch_size=3,
        max_new_tokens=24,
    )
    assert choices == [
        Choice("The answer is B.", "B", True),
        Choice("It is blue.", "D", True),  # stripped, read by the option's text
        Choice("red or blue", None, False),  # two options named: no choice
        Choice("A", "A", False),
        Choice("Answer: dark red.", "C", True),  # "red" is not also read inside "dark red"
    ]
    assert choice_accuracy([c.correct for c in choices]) == pytest.approx(3 / 5)
    assert choice_accuracy([]) == 0.0
    (call,) = backend.calls  # without chunk_size: one call, items in order
    assert call["prompts"] == ["q1", "q2", "q3", "q4", "q5"]
    assert call["images"] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert (call["n"], call["temperature"], call["max_new_tokens"], call["batch_size"]) == (1, 0.0, 24, 3)


def test_chunks_keep_the_item_order_and_other_item_shapes():
    class Item:
        def __init__(self, q: str, key: str) -> None:
            self.q, self.options, self.key = q, OPTIONS, key

    items = [Item(f"q{i}", "B") for i in range(1, 6)]
    backend = ScriptedBackend(SCRIPT)
    choices = answer_choices(
        backend,
        items,
        image_for=lambda it: it.q + ".png",
        prompt_for=lambda it: it.q,
        options_for=lambda it: it.options,
        answer_for=lambda it: it.key,
        batch_size=1,
        max_new_tokens=8,
        chunk_size=2,
        seed=7,
    )
    assert [c.pred for c in choices] == ["B", "D", None, "A", "C"]
    assert [c.correct for c in choices] == [True, False, False, False, False]
    assert [call["prompts"] for call in backend.calls] == [["q1", "q2"], ["q3", "q4"], ["q5"]]
    assert {call["seed"] for call in backend.calls} == {7}
    assert (
        answer_choices(backend, [], image_for=str, prompt_for=str, batch_size=1, max_new_tokens=1) == []
    )  # no items: nothing asked
    assert len(backend.calls) == 3


def test_likeliest_options_scores_every_option_in_one_call_and_breaks_ties_to_the_first():
    items = _items()[:2]
    scores = {"q1:A": -3.0, "q1:B": -1.0, "q1:C": -2.0, "q1:D": -1.0, "q2:A": -0.5}
    scores.update({f"q2:{k}": -4.0 for k in "BCD"})
    backend = ScriptedBackend({}, scores)
    picked = likeliest_options(
        backend,
        items,
        image_for=lambda r: r["image"],
        prompt_for=lambda r: r["question"],
        reply_for=lambda r, k: f"{r['question']}:{k}",
        batch_size=4,
    )
    assert picked == ["B", "A"]
    (call,) = backend.calls
    assert call["answers"] == [f"q{i}:{k}" for i in (1, 2) for k in "ABCD"]
    assert call["questions"] == ["q1"] * 4 + ["q2"] * 4


def test_read_choice():
    opts = {"A": "red", "B": "green", "C": "dark red"}
    assert read_choice("B", opts) == "B"
    assert read_choice("green, clearly", opts) == "B"
    assert read_choice("red or dark red", opts) is None  # two options named: no choice
    assert read_choice("I cannot tell", opts) is None
    # surrounding whitespace never changes the reading
    for text in ("Answer: green ", " the answer is dark red\n", "  (C) dark red  "):
        assert read_choice(text, opts) == read_choice(text.strip(), opts) is not None


def test_parse_letter():
    assert parse_letter("The answer is B. red") == "B"
    # options checked in turn: the stated answer counts, not the first line's letter
    assert parse_letter("A. red? No. B. brown? Yes, so the answer is B.") == "B"
    assert parse_letter("Answer: brown. A. red? No. B. brown? Yes, so the answer is B.") == "B"
    assert parse_letter("C) blue") == "C"
    assert parse_letter("(B) red", "AB") == "B"
    assert parse_letter("I am not sure") is None
    assert parse_letter("The answer is E.") is None
