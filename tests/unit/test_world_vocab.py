"""The world's wordings read back: concept phrases, every caption template, synonyms, negatives."""

from __future__ import annotations

import random

import pytest

from selfsynth.data.world.phrases import SHAPE_SURFACES
from selfsynth.data.world.text import captions, clause_caption, vqa
from selfsynth.data.world.vocab import (
    PARTS,
    cited_concepts,
    clause_phrase,
    compound_phrase,
    concept_phrase,
    fitting_species,
    noun_phrase,
    parse_attributes,
    phrase_attribute,
    species_concepts,
    species_fitting_concepts,
)

ALL = [(p, v) for p, vs in PARTS.items() for v in vs]


@pytest.mark.parametrize(("part", "value"), ALL)
def test_concept_phrase_round_trips(part: str, value: str) -> None:
    phrase = concept_phrase(part, value)
    assert parse_attributes(phrase) == {part: value}
    assert phrase_attribute(phrase) == (part, value)


@pytest.mark.parametrize(("part", "value"), ALL)
def test_every_caption_wording_round_trips(part: str, value: str) -> None:
    for seed in range(40):  # each wording is a random choice among a few: 40 draws cover them all
        rng = random.Random(seed)
        assert parse_attributes(noun_phrase(part, value, rng)) == {part: value}
        assert parse_attributes(clause_phrase(part, value, rng)) == {part: value}
        comp = compound_phrase(part, value, rng)
        if comp is not None:
            assert parse_attributes(f"a {comp} bird") == {part: value}
    for word in SHAPE_SURFACES["size"].get(value, ()) if part == "size" else ():
        assert parse_attributes(f"a {word} bird") == {"size": value}


def _random_attrs(rng: random.Random) -> dict[str, str]:
    return {p: rng.choice(vs) for p, vs in PARTS.items()}


def test_caption_templates_round_trip_on_random_scenes() -> None:
    rng = random.Random(0)
    for _ in range(300):
        attrs = _random_attrs(rng)
        visible = [p for p in PARTS if rng.random() < 0.75]
        scene = {
            "pose": rng.choice(("perched", "flying")),
            "facing": rng.choice(("left", "right")),
            "head_turned": rng.random() < 0.3,
            "background": rng.choice(("sky", "water", "foliage", "sand")),
            "occluder": rng.choice((None, "leaves", "branch")),
            "occluded": rng.choice((None, "tail", "legs", "wing", "breast")),
        }
        caps = captions(attrs, visible, scene, rng)
        assert len(caps) == 5 and len(set(caps)) == 5
        for k, cap in enumerate(caps):
            got = parse_attributes(cap)
            assert got == {p: attrs[p] for p in got}, cap
            assert set(got) <= set(visible), cap
            if k in (0, 3):
                assert set(got) == set(visible), cap
        for q in vqa(attrs, visible, scene, rng):
            assert q["options"][q["answer"]] and len(set(q["options"].values())) == 4
        full = clause_caption(attrs, visible, scene, rng)
        assert parse_attributes(full) == {p: attrs[p] for p in visible}, full


def test_synonyms_and_free_wording_are_read() -> None:
    text = (
        "This is a Crested Vireling: it has a scarlet cap, greyish wings with a pair of white wing bars, "
        "a bill that is short and conical, a fork-tailed look, a white ring around its eye, "
        "dark streaks on the breast and pinkish legs."
    )
    assert parse_attributes(text) == {
        "crown_colour": "red",
        "wing_colour": "grey",
        "wing_bars": "two white",
        "beak_shape": "conical",
        "tail_shape": "forked",
        "face": "white eye ring",
        "breast_pattern": "streaked",
        "leg_colour": "pink",
    }
    assert parse_attributes("Crown: yellow. Tail: square-tipped. The face is plain; no wing bars.") == {
        "crown_colour": "yellow",
        "wing_bars": "none",
        "tail_shape": "square",
        "face": "plain",
    }


def test_unattached_values_and_scene_words_state_nothing() -> None:
    assert parse_attributes("A red bird flying against a blue sky over green leaves.") == {}
    assert parse_attributes("The tail is hidden behind leaves and its legs are not visible.") == {}
    assert parse_attributes("") == {}


def test_cited_concepts_match_by_value() -> None:
    attrs = {p: vs[0] for p, vs in PARTS.items()}
    concepts = species_concepts(attrs)
    text = "A scarlet-crowned bird with brown wings, a conical beak and a rounded tail."
    assert cited_concepts(text, concepts) == [concepts[0], concepts[1], concepts[3]]
    assert cited_concepts("a blue crown and a forked tail", concepts) == [concepts[5]]


def test_fitting_species() -> None:
    table = {
        "A": {"crown_colour": "red", "tail_shape": "forked"},
        "B": {"crown_colour": "red", "tail_shape": "rounded"},
        "C": {"crown_colour": "blue", "tail_shape": "forked"},
    }
    assert fitting_species({"crown_colour": "red"}, table) == ["A", "B"]
    assert fitting_species({"crown_colour": "red", "tail_shape": "forked"}, table) == ["A"]
    assert fitting_species({}, table) == ["A", "B", "C"]
    bank = {"A": ["bright red crown", "deeply forked tail"], "B": ["bright red crown", "rounded tail"]}
    assert species_fitting_concepts(["bright red crown"], bank) == ["A", "B"]
