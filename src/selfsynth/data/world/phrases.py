"""The world's parts, their values, and every wording that states a value (concepts and captions).

One table drives the field-guide concept phrases (``concepts.json``), the varied caption wordings
(``captions.jsonl``) and the parser that reads values back out of free text (``parse.py``), so the
three cannot drift apart: every word a caption may use to state a value is listed here, and the
tests check that each wording parses back to the value it was made from.
"""

from __future__ import annotations

import random

# part -> possible values. Order matters: it is the order of concept phrases and of world.json.
PARTS: dict[str, list[str]] = {
    "crown_colour": ["red", "yellow", "blue", "black", "white", "orange"],
    "wing_colour": ["brown", "grey", "blue", "green", "black", "red"],
    "wing_bars": ["none", "one white", "two white", "one yellow", "two yellow"],
    "beak_shape": ["conical", "slender", "hooked", "curved"],
    "beak_colour": ["black", "orange", "yellow", "red"],
    "tail_shape": ["forked", "rounded", "square", "pointed"],
    "face": ["plain", "white eye ring", "yellow eye ring", "black mask"],
    "breast_pattern": ["plain", "streaked", "spotted", "barred"],
    "leg_colour": ["black", "pink", "yellow", "orange"],
    "size": ["small", "medium", "large"],
}

# What a person calls the part (captions, VQA questions, "the tail is hidden").
PART_NOUNS: dict[str, str] = {
    "crown_colour": "crown",
    "wing_colour": "wings",
    "wing_bars": "wing bars",
    "beak_shape": "beak",
    "beak_colour": "beak",
    "tail_shape": "tail",
    "face": "face",
    "breast_pattern": "breast",
    "leg_colour": "legs",
    "size": "body",
}

# Colour words a caption may use, and the single words the parser accepts for each colour.
COLOUR_SURFACES: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "crimson"),
    "yellow": ("yellow", "golden", "lemon-yellow"),
    "blue": ("blue", "azure", "cobalt-blue"),
    "black": ("black", "jet-black", "sooty black"),
    "white": ("white", "snowy", "snow-white"),
    "orange": ("orange", "tangerine", "flame-orange"),
    "brown": ("brown", "chestnut", "chocolate-brown"),
    "grey": ("grey", "slate-grey", "ash-grey"),
    "green": ("green", "emerald", "emerald-green"),
    "pink": ("pink", "pinkish", "rosy pink"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "crimson", "reddish"),
    "yellow": ("yellow", "golden", "lemon", "yellowish"),
    "blue": ("blue", "azure", "cobalt", "bluish", "blueish"),
    "black": ("black", "jet", "sooty", "blackish"),
    "white": ("white", "snowy", "snow", "whitish"),
    "orange": ("orange", "tangerine", "flame", "orangish", "orangey"),
    "brown": ("brown", "chestnut", "chocolate", "brownish"),
    "grey": ("grey", "slate", "ash", "ashy", "greyish"),
    "green": ("green", "emerald", "greenish"),
    "pink": ("pink", "pinkish", "rosy"),
}
# The field guide's colour adjective (one fixed wording per colour).
GUIDE_COLOUR = {
    "red": "bright red",
    "yellow": "bright yellow",
    "blue": "bright blue",
    "black": "jet-black",
    "white": "snow-white",
    "orange": "bright orange",
    "brown": "warm brown",
    "grey": "slate-grey",
    "green": "emerald-green",
    "pink": "pink",
}
INTENSIFIERS = ("", "", "bright ", "vivid ", "deep ")

# Non-colour values: caption wordings (adjectives) and the parser's single words per value.
SHAPE_SURFACES: dict[str, dict[str, tuple[str, ...]]] = {
    "beak_shape": {
        "conical": ("short conical", "conical", "stout cone-shaped"),
        "slender": ("slender", "thin", "needle-thin"),
        "hooked": ("hooked", "strongly hooked", "hook-tipped"),
        "curved": ("long down-curved", "down-curved", "decurved"),
    },
    "tail_shape": {
        "forked": ("deeply forked", "forked", "fork-shaped"),
        "rounded": ("rounded", "round-tipped", "neatly rounded"),
        "square": ("square-tipped", "square", "squared-off"),
        "pointed": ("long pointed", "pointed", "wedge-shaped"),
    },
    "breast_pattern": {
        "plain": ("plain", "unmarked", "unpatterned"),
        "streaked": ("streaked", "heavily streaked", "streaky"),
        "spotted": ("spotted", "speckled", "boldly spotted"),
        "barred": ("barred", "finely barred", "cross-barred"),
    },
    "size": {
        "small": ("small",),
        "medium": ("medium-sized", "mid-sized"),
        "large": ("large", "big"),
    },
}
SHAPE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "beak_shape": {
        "conical": ("conical", "cone"),
        "slender": ("slender", "thin"),
        "hooked": ("hooked", "hook"),
        "curved": ("curved", "decurved", "curve"),
    },
    "tail_shape": {
        "forked": ("forked", "fork", "notched"),
        "rounded": ("rounded", "round"),
        "square": ("square", "squared"),
        "pointed": ("pointed", "wedge"),
    },
    "breast_pattern": {
        "plain": ("plain", "unmarked", "unpatterned"),
        "streaked": ("streaked", "streaky", "streak"),
        "spotted": ("spotted", "speckled", "spot", "spotty"),
        "barred": ("barred",),
    },
    "size": {
        "small": ("small", "little", "tiny"),
        "medium": ("medium", "mid", "midsized"),
        "large": ("large", "big", "bulky"),
    },
}

# Nouns (after the parser's normalisation) that name each part; "-ed" forms serve compounds
# such as "red-crowned" or "fork-tailed".
ANCHORS: dict[str, tuple[str, ...]] = {
    "crown_colour": ("crown", "crowns", "crowned", "cap", "capped"),
    "wing_colour": ("wing", "wings", "winged"),
    "beak_shape": ("beak", "beaks", "bill", "bills", "beaked", "billed"),
    "beak_colour": ("beak", "beaks", "bill", "bills", "beaked", "billed"),
    "tail_shape": ("tail", "tails", "tailed"),
    "face": ("eyering", "eyerings", "mask", "masks", "masked", "face", "faced"),
    "breast_pattern": ("breast", "breasted", "chest", "chested", "underparts", "belly"),
    "leg_colour": ("leg", "legs", "legged", "feet", "foot"),
    "size": ("bird", "body", "bodied", "size", "sized", "build", "built"),
}

# The face: each value is a colour word next to its own noun (eye ring, mask, face).
FACE_FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "plain": (("plain", "unmarked", "clean", "bare"), ("face", "faced")),
    "white eye ring": (COLOUR_WORDS["white"], ("eyering", "eyerings")),
    "yellow eye ring": (COLOUR_WORDS["yellow"], ("eyering", "eyerings")),
    "black mask": ((*COLOUR_WORDS["black"], "dark"), ("mask", "masks", "masked")),
}

COUNT_WORDS = {"one": ("one", "single", "lone", "1"), "two": ("two", "double", "twin", "paired", "2")}


def concept_phrase(part: str, value: str) -> str:
    """The field-guide phrase for one part value (one wording, used in ``concepts.json``)."""
    if part in ("crown_colour", "wing_colour", "beak_colour", "leg_colour"):
        noun = {"crown_colour": "crown", "wing_colour": "wings", "beak_colour": "bill", "leg_colour": "legs"}
        return f"{GUIDE_COLOUR[value]} {noun[part]}"
    fixed = {
        "wing_bars": {
            "none": "plain wings without wing bars",
            "one white": "a single white wing bar",
            "two white": "two white wing bars",
            "one yellow": "a single yellow wing bar",
            "two yellow": "two yellow wing bars",
        },
        "beak_shape": {
            "conical": "short conical beak",
            "slender": "long slender beak",
            "hooked": "strongly hooked beak",
            "curved": "long down-curved beak",
        },
        "tail_shape": {
            "forked": "deeply forked tail",
            "rounded": "rounded tail",
            "square": "square-tipped tail",
            "pointed": "long pointed tail",
        },
        "face": {
            "plain": "plain unmarked face",
            "white eye ring": "white eye ring",
            "yellow eye ring": "yellow eye ring",
            "black mask": "black mask through the eye",
        },
        "breast_pattern": {
            "plain": "plain unmarked breast",
            "streaked": "heavily streaked breast",
            "spotted": "spotted breast",
            "barred": "finely barred breast",
        },
        "size": {"small": "small compact body", "medium": "medium-sized body", "large": "large heavy body"},
    }
    return fixed[part][value]


def species_concepts(attributes: dict[str, str]) -> list[str]:
    """One field-guide phrase per part, in ``PARTS`` order."""
    return [concept_phrase(p, attributes[p]) for p in PARTS]


def _colour(value: str, rng: random.Random) -> str:
    word = rng.choice(COLOUR_SURFACES[value])
    return rng.choice(INTENSIFIERS) + word if "-" not in word and " " not in word else word


def _bars(value: str, rng: random.Random) -> tuple[str, str]:
    """(noun phrase, clause) for the wing bars."""
    if value == "none":
        return rng.choice(("no wing bars", "unbarred wings", "plain wings without bars")), rng.choice(
            ("its wings have no bars", "the wings lack wing bars", "there are no wing bars")
        )
    count, colour = value.split()
    col = rng.choice(COLOUR_SURFACES[colour][:2])
    if count == "two":
        np_ = rng.choice(
            (
                f"two {col} wing bars",
                f"a pair of {col} wing bars",
                f"double {col} wingbars",
                f"two {col} bars on the wings",
            )
        )
        clause = rng.choice((f"the wings show two {col} bars", f"its wing bars are {col}"))
    else:
        np_ = rng.choice((f"a single {col} wing bar", f"one {col} wing bar", f"a {col} bar on the wing"))
        clause = rng.choice((f"the wing shows a single {col} bar", f"the wing has one {col} bar"))
    return np_, clause


def _face(value: str, rng: random.Random) -> tuple[str, str, str | None]:
    """(noun phrase, clause, compound adjective or None) for the face."""
    if value == "plain":
        return (
            rng.choice(("a plain face", "an unmarked face", "no eye ring or mask")),
            rng.choice(("its face is plain", "the face is unmarked")),
            "plain-faced",
        )
    if value == "black mask":
        col = rng.choice(("black", "jet-black", "dark"))
        return (
            rng.choice((f"a {col} mask through the eye", f"a {col} eye mask", f"a {col} mask")),
            rng.choice((f"its face has a {col} mask", "its eye mask is black")),
            f"{col}-masked",
        )
    col = rng.choice(COLOUR_SURFACES[value.split()[0]][:2])
    return (
        rng.choice((f"a {col} eye ring", f"a {col} ring around the eye", f"a {col} eye-ring")),
        rng.choice((f"its eye ring is {col}", f"it has a {col} ring around the eye")),
        None,
    )


def noun_phrase(part: str, value: str, rng: random.Random) -> str:
    """A varied noun phrase stating the value, e.g. ``"a bright red cap"``, ``"pink legs"``."""
    if part == "wing_bars":
        return _bars(value, rng)[0]
    if part == "face":
        return _face(value, rng)[0]
    if part in ("crown_colour", "beak_colour"):
        noun = rng.choice(("crown", "cap") if part == "crown_colour" else ("beak", "bill"))
        return f"a {_colour(value, rng)} {noun}"
    if part == "wing_colour":
        return f"{_colour(value, rng)} wings"
    if part == "leg_colour":
        return f"{_colour(value, rng)} {rng.choice(('legs', 'legs and feet', 'legs'))}"
    adj = rng.choice(SHAPE_SURFACES[part][value])
    if part == "size":
        return f"a {adj} {rng.choice(('body', 'build'))}"
    noun = {"beak_shape": ("beak", "bill"), "tail_shape": ("tail",), "breast_pattern": ("breast", "chest")}
    return f"a {adj} {rng.choice(noun[part])}"


def clause_phrase(part: str, value: str, rng: random.Random) -> str:
    """A varied clause stating the value, e.g. ``"its crown is scarlet"``."""
    if part == "wing_bars":
        return _bars(value, rng)[1]
    if part == "face":
        return _face(value, rng)[1]
    poss = rng.choice(("its", "the"))
    if part in ("crown_colour", "wing_colour", "beak_colour", "leg_colour"):
        noun = {"crown_colour": "crown is", "wing_colour": "wings are", "beak_colour": "bill is"}
        return f"{poss} {noun.get(part, 'legs are')} {_colour(value, rng)}"
    if part == "size":
        return rng.choice(("it is a {} bird", "its body is {}", "the body size is {}")).format(
            rng.choice(SHAPE_SURFACES["size"][value]).replace("-sized", "")
        )
    adj = rng.choice(SHAPE_SURFACES[part][value])
    if part == "beak_shape" and " " in adj:
        adj = " and ".join(adj.split(" ", 1))  # "short and conical", "long and down-curved"
    noun = {"beak_shape": "beak", "tail_shape": "tail", "breast_pattern": rng.choice(("breast", "chest"))}
    return f"{poss} {noun[part]} is {adj}"


def compound_phrase(part: str, value: str, rng: random.Random) -> str | None:
    """A compound adjective such as ``"red-crowned"`` or ``"fork-tailed"`` (None if unnatural)."""
    colour_noun = {
        "crown_colour": "crowned",
        "wing_colour": "winged",
        "beak_colour": "billed",
        "leg_colour": "legged",
    }
    if part in colour_noun:
        return f"{rng.choice(COLOUR_SURFACES[value][:2])}-{colour_noun[part]}"
    if part == "face":
        return _face(value, rng)[2]
    stems = {
        "beak_shape": {
            "conical": "cone-billed",
            "slender": "thin-billed",
            "hooked": "hook-billed",
            "curved": "curve-billed",
        },
        "tail_shape": {
            "forked": "fork-tailed",
            "rounded": "round-tailed",
            "square": "square-tailed",
            "pointed": "wedge-tailed",
        },
        "breast_pattern": {
            "plain": "plain-breasted",
            "streaked": "streak-breasted",
            "spotted": "spot-breasted",
        },
    }
    return stems.get(part, {}).get(value)
