from selfsynth.metrics.answers import accuracy
from selfsynth.metrics.choice import parse_letter
from selfsynth.text import first_class, label_in, mentions, names_label, normalize

CLASSES = ["Tern", "Arctic Tern", "pneumonia", "normal", "Black footed Albatross", "Crème Brûlée Finch"]


def test_normalize():
    assert normalize("Black_footed-Albatross!") == "black footed albatross"
    assert normalize("CRÈME  brûlée") == "crème brûlée"


def test_substring_rule_is_the_papers():
    assert label_in("This is a black-footed albatross.", "Black_footed_Albatross")
    assert label_in("There is no pneumonia.", "pneumonia")  # the paper's rule counts it
    assert label_in("An Arctic Tern.", "Tern")


def test_strict_longest_name_wins():
    assert first_class("This is an Arctic Tern with a black cap.", CLASSES) == "Arctic Tern"
    assert first_class("A Tern, not an Arctic Tern.", CLASSES) == "Tern"
    assert [m.label for m in mentions("arctic tern and tern", CLASSES)] == ["Arctic Tern", "Tern"]


def test_strict_negations():
    assert first_class("There is no pneumonia; the lungs look normal.", CLASSES) == "normal"
    assert first_class("No signs of pneumonia.", CLASSES) is None
    assert not names_label("This is not a Tern.", "Tern", CLASSES)
    assert names_label("It is a Tern rather than an Arctic Tern.", "Tern", CLASSES)


def test_unicode_label():
    assert names_label("I think it is a crème brûlée finch.", "Crème Brûlée Finch", CLASSES)


def test_accuracy_counts():
    answers = ["An Arctic Tern.", "no pneumonia here", "Tern"]
    labels = ["Tern", "pneumonia", "Tern"]
    acc = accuracy(answers, labels, CLASSES)
    assert acc["n"] == 3
    assert abs(acc["acc_substring"] - 1.0) < 1e-9
    assert abs(acc["acc_strict"] - 1 / 3) < 1e-9


def test_vqa_answer_names_the_subject_then_the_value_and_read_choice_reads_it():
    from selfsynth.data.world.text import QUESTIONS, vqa_subject
    from selfsynth.metrics.choice import read_choice
    from selfsynth.prompts import VQA_MAX_NEW_TOKENS, vqa_answer

    options = {"A": "slender", "B": "long and slender", "C": "blue", "D": "Black"}
    assert vqa_answer("B", options) == "Answer: long and slender."
    assert vqa_answer("D", options, vqa_subject("wing_colour")) == "Wings: Black."
    assert parse_letter(vqa_answer("A", options, "Beak")) is None  # no letter is claimed
    for key in options:
        # "slender" is not also read inside "long and slender"
        assert read_choice(vqa_answer(key, options, vqa_subject("beak_shape")), options) == key
    assert read_choice("the answer is black", options) == "D"  # case and punctuation do not matter
    assert read_choice("The answer is C. long and slender", options) == "C"  # a stated letter wins
    assert read_choice("Answer: blue. A. slender? Yes.", options) == "C"  # the stated value decides
    assert read_choice("slender or blue", options) is None  # two options: no choice
    assert read_choice("Answer: long and slender, or just slender", options) is None
    assert read_choice("no idea", options) is None
    # a world VQA item's answer: its right option (or a given letter's) under its kind's subject
    from selfsynth.data.world.text import world_vqa_answer

    item = {"kind": "wing_colour", "options": options, "answer": "C"}
    assert world_vqa_answer(item) == "Wings: blue." and world_vqa_answer(item, "D") == "Wings: Black."
    # every world question kind has its own subject, and none is an option of another kind
    assert all(vqa_subject(k) != "Answer" for k in QUESTIONS)
    assert (
        len(vqa_answer("A", {"A": "walking on the ground"}, vqa_subject("pose")).split()) + 8
        <= VQA_MAX_NEW_TOKENS
    )


def test_repeated_phrase_ignores_the_label_named_twice():
    from selfsynth.text import repeated_phrase

    label = "Sedge Flycatcher"
    twice = f"This is a {label}. It has red bill and black cap, which are the features of a {label}."
    assert not repeated_phrase(twice, (label,))
    assert repeated_phrase(twice)  # "a sedge flycatcher" twice
    assert repeated_phrase(
        f"It has bright red bill, bright red bill and black cap. It is a {label}.", (label,)
    )
    assert not repeated_phrase("bright red bill and bright red crown")  # shares two words, not three


def test_drop_repeated_items_keeps_the_claims_and_the_list_grammar():
    from selfsynth.text import drop_repeated_items

    assert (
        drop_repeated_items("It has white eye ring, red bill, long tail and long tail, which show a Tern.")
        == "It has white eye ring, red bill and long tail, which show a Tern."
    )
    assert drop_repeated_items("The bird has red bill, red bill and black cap. It is a Tern.") == (
        "The bird has red bill and black cap. It is a Tern."
    )
    assert drop_repeated_items("It has red bill and red bill.") == "It has red bill."
    clean = "It has red bill, black cap and long tail. It is a Tern."
    assert drop_repeated_items(clean) == clean
