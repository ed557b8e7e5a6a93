import random

from selfsynth.config import RunConfig
from selfsynth.stages.context import Context
from selfsynth.stages.sample import FALLBACK_QUESTION, accept


def row(cands, ok, scores, label="Tern"):
    return {
        "id": "x#0",
        "image": "/i.png",
        "label": label,
        "kind": "explain",
        "question": "Why?",
        "candidates": cands,
        "names_label": ok,
        "scores": scores,
    }


def test_filter_then_argmax():
    r = row(["a", "b", "c"], [False, True, True], [9.0, 1.0, 2.0])
    (qa,) = accept([r], "ours", "label")
    assert qa.answer == "c"  # the best-scored among those naming the label, not the best overall
    assert qa.question == "Why?"


def test_avoid_repeats_prefers_a_candidate_that_repeats_no_phrase():
    rep = "This is a Tern. It has red bill, red bill and red bill, which are the features of a Tern."
    clean = "This is a Tern. It has red bill and black cap, which are the features of a Tern."
    r = row([rep, clean, "a gull"], [True, True, False], [5.0, 1.0, 9.0])
    assert accept([r], "ours", "label", avoid_repeats=True)[0].answer == clean
    assert accept([r], "ours", "label", avoid_repeats=False)[0].answer == rep  # the score alone
    only = row([rep, "a gull"], [True, False], [1.0, 9.0])  # every label-naming candidate repeats
    fixed = "This is a Tern. It has red bill, which are the features of a Tern."
    assert accept([only], "ours", "label", avoid_repeats=True)[0].answer == fixed


def test_synthesis_keeps_the_first_answer_naming_the_label_without_repeats():
    from selfsynth.stages.synthesize import pick_answer

    labels = ["Tern", "Gull"]
    rep = "It has red bill, red bill and red bill. These features show that it is a Tern."
    clean = "It has red bill and black cap. These features show that it is a Tern."
    assert pick_answer(["This is a Gull.", rep, clean], "Tern", labels) == (clean, True, False)
    assert pick_answer(["This is a Gull.", rep, clean], "Tern", labels, avoid_repeats=False) == (
        rep,
        True,
        False,
    )
    assert pick_answer(["This is a Gull.", "A bird."], "Tern", labels) == ("This is a Gull.", False, False)
    # only repeating answers: the repeated list items go, what the model claimed stays
    fixed = "It has red bill. These features show that it is a Tern."
    assert pick_answer([rep], "Tern", labels) == (fixed, True, True)


def test_synthesis_with_prefer_cited_keeps_the_answer_citing_most_of_the_prompt_concepts():
    from selfsynth.stages.synthesize import pick_answer

    labels = ["Tern", "Gull"]
    one = "It has a black cap. These features show that it is a Tern."
    two = "It has a black cap and a forked tail. These features show that it is a Tern."
    wrong = "It has a black cap, a forked tail and grey wings. These features show that it is a Tern."
    # grounded counts: prompt concepts cited minus concepts cited from outside them
    assert pick_answer([one, two, wrong], "Tern", labels, grounded=[1, 2, 1]) == (two, True, False)
    assert pick_answer([one, two, wrong], "Tern", labels) == (one, True, False)  # the first, as before
    # naming the label still comes first
    assert (
        pick_answer(["A Gull with a black cap and a forked tail.", one], "Tern", labels, grounded=[2, 1])[0]
        == one
    )


def test_fallback_label_and_drop():
    r = row(["a", "b"], [False, False], [1.0, 2.0])
    (qa,) = accept([r], "ours", "label")
    assert (qa.question, qa.answer, qa.kind) == (FALLBACK_QUESTION, "This is an image of Tern.", "fallback")
    assert accept([r], "ours", "drop") == []


def test_fallback_synth_takes_the_images_round_one_pair():
    from selfsynth.records import QA

    first = [
        QA("x#0", "/i.png", "What is it? Explain.", "This is a Tern. It has a black cap.", "Tern", "explain"),
        QA("y#1", "/j.png", "What is this?", "This is an image of Gull.", "Gull", "fallback"),
    ]
    (qa,) = accept([row(["a", "b"], [False, False], [1.0, 2.0])], "ours", "synth", first_round=first)
    assert (qa.question, qa.answer, qa.kind) == (first[0].question, first[0].answer, "fallback")
    other = {**row(["a"], [False], [1.0], label="Gull"), "id": "y#3", "image": "/j.png"}
    (qa,) = accept([other], "ours", "synth", first_round=first)  # no round-1 answer: the label
    assert (qa.question, qa.answer) == (FALLBACK_QUESTION, "This is an image of Gull.")
    good = row(["This is a Tern."], [True], [1.0])
    assert accept([good], "ours", "synth", first_round=first)[0].answer == "This is a Tern."


def test_nofilter_keeps_first_sample():
    r = row(["a", "b"], [False, True], [1.0, 2.0])
    (qa,) = accept([r], "nofilter", "label")
    assert qa.answer == "a"


def test_draw_questions_distinct_and_seeded():
    cfg = RunConfig()
    cfg.data.kind = "birds"
    ctx = Context(cfg=cfg, run_dir=None, train=[], test=[], labels=[])  # type: ignore[arg-type]
    a = ctx.pools.draw(random.Random(1), 8)
    b = ctx.pools.draw(random.Random(1), 8)
    assert a == b and len(set(a)) == 8
    only = ctx.pools.draw(random.Random(2), 5, kinds=("explain", "cot"))
    assert {k for k, _ in only} <= {"explain", "cot"}
    assert all("species" in q or "bird" in q for _, q in a)
