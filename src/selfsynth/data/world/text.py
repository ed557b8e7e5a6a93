"""Generic captions and multiple-choice VQA about what one image shows, never naming a species.

This is the base model's pretraining text (it learns to describe visible parts, pose and
background, like a general VLM) and the general-ability test. Captions state only visible
parts, in varied wordings that ``parse.parse_attributes`` reads back.
"""

from __future__ import annotations

import ast
import inspect
import random
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from selfsynth.data.world import phrases
from selfsynth.data.world.phrases import (
    PART_NOUNS,
    PARTS,
    SHAPE_SURFACES,
    clause_phrase,
    compound_phrase,
    noun_phrase,
)
from selfsynth.prompts import listed, vqa_answer

POSES = {
    "perched": (
        "perched on a branch",
        "sitting on a twig",
        "resting on a branch",
        "perched on a thin branch",
    ),
    "flying": ("in flight", "flying", "gliding through the air", "flying past"),
}
FACINGS = {
    "left": ("facing left", "facing to the left", "looking left"),
    "right": ("facing right", "facing to the right", "looking right"),
}
HEAD_AWAY = ("with its head turned away", "looking away from the camera")
BACKGROUNDS = {
    "sky": ("against a blue sky", "against the open sky", "with sky behind it", "under a cloudy sky"),
    "water": ("over water", "in front of a lake", "above rippling water", "by the water"),
    "foliage": (
        "in front of green foliage",
        "among leaves",
        "against a leafy background",
        "with foliage behind it",
    ),
    "sand": ("against sandy ground", "over a sandy beach", "in front of sand", "above the sand"),
}
HIDDEN = {
    "tail_shape": ("its tail is out of view", "the tail is hidden"),
    "leg_colour": ("its legs are hidden", "the legs are not visible"),
    "breast_pattern": ("its breast is covered", "the breast is hidden"),
    "wing_colour": ("its wing is covered", "the wing is hidden"),
    "crown_colour": ("the top of its head is hidden",),
    "beak_shape": ("its beak cannot be seen",),
    "face": ("its face cannot be seen",),
}
COVERS = {"leaves": ("behind leaves", "by leaves"), "branch": ("behind a branch", "by a branch")}
OPENERS = ("This bird is", "The bird is", "Here a bird is", "The photo shows a bird")
LIST_HEADS = ("Visible features", "Features", "Seen on the bird", "Visible parts")

# Multiple-choice wordings of the part values (VQA options).
OPTION_WORDS: dict[str, dict[str, str]] = {
    "wing_bars": {
        "none": "no wing bars",
        "one white": "one white wing bar",
        "two white": "two white wing bars",
        "one yellow": "one yellow wing bar",
        "two yellow": "two yellow wing bars",
    },
    "beak_shape": {
        "conical": "short and conical",
        "slender": "long and slender",
        "hooked": "strongly hooked",
        "curved": "long and down-curved",
    },
    "tail_shape": {
        "forked": "deeply forked",
        "rounded": "rounded",
        "square": "square-tipped",
        "pointed": "long and pointed",
    },
    "face": {
        "plain": "no marking (plain face)",
        "white eye ring": "a white eye ring",
        "yellow eye ring": "a yellow eye ring",
        "black mask": "a black mask",
    },
    "size": {"small": "small", "medium": "medium-sized", "large": "large", "_extra": "huge"},
}
QUESTIONS = {
    "crown_colour": "What colour is the bird's crown?",
    "wing_colour": "What colour are the bird's wings?",
    "wing_bars": "Which best describes the bird's wing bars?",
    "beak_shape": "What shape is the bird's beak?",
    "beak_colour": "What colour is the bird's beak?",
    "tail_shape": "What shape is the bird's tail?",
    "face": "What marking does the bird have around its eye?",
    "breast_pattern": "What pattern is on the bird's breast?",
    "leg_colour": "What colour are the bird's legs?",
    "size": "How large is the bird?",
    "pose": "Is the bird perched or flying?",
    "facing": "Which way is the bird facing?",
    "background": "What is behind the bird?",
    "hidden": "Which of these parts is hidden in this picture?",
}
# What each kind of question asks about, as a multiple-choice answer names it before the value
# (``prompts.vqa_answer``: "Wings: black.").
VQA_SUBJECTS = {
    **{part: noun.capitalize() for part, noun in PART_NOUNS.items()},
    "size": "Size",
    "face": "Eye marking",
    "pose": "Pose",
    "facing": "Facing",
    "background": "Background",
    "hidden": "Hidden",
}


def vqa_subject(kind: str) -> str:
    """What a world VQA answer names before the value ("Wings"); "Answer" for a kind without one."""
    return VQA_SUBJECTS.get(kind, "Answer")


def world_vqa_answer(item: Mapping[str, Any], letter: str | None = None) -> str:
    """``prompts.vqa_answer`` for one of the world's VQA items (``kind``, ``options``, ``answer``).

    The answer for the item's right option, or for ``letter``'s (likelihood scoring asks for
    each option), under the subject of the item's kind: one place decides the form that the
    base's pretraining, its drills, every round's general mix and the evaluation share.
    """
    return vqa_answer(letter or item["answer"], item["options"], vqa_subject(item.get("kind", "")))


SCENE_OPTIONS = {
    "pose": {"perched": "perched", "flying": "flying", "_a": "swimming", "_b": "walking on the ground"},
    "facing": {"left": "left", "right": "right", "_a": "up", "_b": "down"},
    "background": {"sky": "sky", "water": "water", "foliage": "foliage", "sand": "sand"},
}
LETTERS = "ABCD"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _beak_np(attrs: dict[str, str], rng: random.Random) -> str:
    shape = rng.choice(SHAPE_SURFACES["beak_shape"][attrs["beak_shape"]])
    colour = rng.choice(phrases.COLOUR_SURFACES[attrs["beak_colour"]][:2])
    return f"a {shape} {colour} {rng.choice(('beak', 'bill'))}"


def _nps(parts: list[str], attrs: dict[str, str], rng: random.Random) -> list[str]:
    """Noun phrases for ``parts``; a visible beak's shape and colour go in one phrase."""
    out, both = [], "beak_shape" in parts and "beak_colour" in parts
    for p in parts:
        if both and p == "beak_colour":
            continue
        out.append(_beak_np(attrs, rng) if both and p == "beak_shape" else noun_phrase(p, attrs[p], rng))
    return out


def _scene_bits(scene: dict[str, Any], rng: random.Random, wings_visible: bool) -> tuple[str, str, str]:
    poses = list(POSES[scene["pose"]]) + (
        ["flying with its wings spread"] if scene["pose"] == "flying" and wings_visible else []
    )
    facing = (
        rng.choice(HEAD_AWAY)
        if scene["head_turned"] and rng.random() < 0.5
        else rng.choice(FACINGS[scene["facing"]])
    )
    return rng.choice(poses), facing, rng.choice(BACKGROUNDS[scene["background"]])


def _hidden_note(visible: list[str], scene: dict[str, Any], rng: random.Random) -> str:
    hidden = [p for p in HIDDEN if p not in visible]
    if not hidden:
        return ""
    p = rng.choice(hidden)
    cover = ""
    occluded = {"tail": "tail_shape", "legs": "leg_colour", "breast": "breast_pattern", "wing": "wing_colour"}
    if scene.get("occluder") and occluded.get(scene.get("occluded") or "") == p:
        cover = " " + rng.choice(COVERS[scene["occluder"]])
    return " " + _cap(rng.choice(HIDDEN[p])) + cover + "."


def captions(
    attrs: dict[str, str], visible: list[str], scene: dict[str, Any], rng: random.Random, n: int = 5
) -> list[str]:
    """``n`` varied descriptions of the visible parts, the pose and the background.

    Caption ``k`` has style ``k % 5`` (callers rely on the order): 0 a sentence naming every
    visible part, 1 a few "its crown is red" clauses, 2 compound adjectives ("red-crowned"),
    3 a feature list naming every visible part plus pose and background, 4 a short phrase with
    a note on a hidden part.
    """
    parts = [p for p in PARTS if p in visible and p != "size"]
    size = attrs["size"] if "size" in visible else None
    bird = f"{rng.choice(SHAPE_SURFACES['size'][size])} bird" if size else "bird"
    art = "An" if bird[0] in "aeiou" else "A"
    wings = "wing_colour" in visible
    out: list[str] = []
    for k in range(n):
        style = k % 5
        pose, facing, bg = _scene_bits(scene, rng, wings)
        sub = rng.sample(parts, min(len(parts), rng.randint(2, 4))) if parts else []
        if style == 0:
            text = f"{art} {bird} {pose} {bg}, {facing}."
            if parts:
                text += f" It has {listed(_nps(parts, attrs, rng))}."
        elif style == 1:
            text = f"{rng.choice(OPENERS)} {pose} {bg}."
            if sub:
                text += " " + _cap(listed([clause_phrase(p, attrs[p], rng) for p in sub])) + "."
        elif style == 2:
            with_comp = [p for p in sub if compound_phrase(p, attrs[p], random.Random(0))][:2]
            comps = [c for p in with_comp if (c := compound_phrase(p, attrs[p], rng))]
            rest = [p for p in sub if p not in with_comp]
            head = (
                f"{'An' if comps and comps[0][0] in 'aeiou' else 'A'} {', '.join(comps)} bird"
                if comps
                else f"{art} {bird}"
            )
            text = f"{head} {pose}, {facing}"
            text += f", with {listed(_nps(rest, attrs, rng))}." if rest else "."
        elif style == 3:
            items = [re.sub(r"^(a|an) ", "", x) for x in _nps(parts, attrs, rng)]
            if size:
                items.append(f"{rng.choice(SHAPE_SURFACES['size'][size])} body")
            text = f"{rng.choice(LIST_HEADS)}: {'; '.join(items) if items else 'none clearly visible'}."
            text += f" Pose: {scene['pose']}, facing {scene['facing']}. Background: {scene['background']}."
        else:
            text = (
                f"{_cap(listed(_nps(sub, attrs, rng)))} on a bird {pose} {bg}."
                if sub
                else f"{art} {bird} {pose} {bg}."
            )
            text += _hidden_note(visible, scene, rng)
        out.append(re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text))
    return out


def clause_caption(
    attrs: dict[str, str], visible: list[str], scene: dict[str, Any], rng: random.Random
) -> str:
    """A full description that names each visible part before its value ("its crown is red").

    Why a separate form: in the caption styles a value comes before its noun ("a red crown",
    "a hooked black beak"), so a model writing it must already know which part it is about to
    name; here the part noun is written first and the value follows it, which is the easier
    thing for a small decoder to learn to read off the image. Every visible part is stated,
    in ``PARTS`` order, after the pose, background and facing; size goes in the opening.
    """
    parts = [p for p in PARTS if p in visible and p != "size"]
    size = attrs["size"] if "size" in visible else None
    bird = f"{rng.choice(SHAPE_SURFACES['size'][size])} bird" if size else "bird"
    pose, facing, bg = _scene_bits(scene, rng, "wing_colour" in visible)
    text = f"{'An' if bird[0] in 'aeiou' else 'A'} {bird} {pose} {bg}, {facing}."
    if parts:
        text += " " + _cap(listed([clause_phrase(p, attrs[p], rng) for p in parts])) + "."
    return text


def _options(correct: str, pool: dict[str, str], rng: random.Random) -> tuple[dict[str, str], str]:
    others = [w for v, w in pool.items() if v != correct]
    picked = [pool[correct], *rng.sample(others, 3)]
    rng.shuffle(picked)
    return dict(zip(LETTERS, picked, strict=True)), LETTERS[picked.index(pool[correct])]


def _part_pool(part: str) -> dict[str, str]:
    return OPTION_WORDS.get(part) or {v: v for v in PARTS[part]}


def vqa(
    attrs: dict[str, str], visible: list[str], scene: dict[str, Any], rng: random.Random, n: int = 3
) -> list[dict[str, Any]]:
    """``n`` four-option questions about visible parts, pose, facing, background or a hidden part."""
    kinds = [p for p in PARTS if p in visible] + ["pose", "facing", "background"]
    nouns = {p: PART_NOUNS[p] for p in PARTS if p not in ("beak_colour", "size")}
    hidden = [p for p in nouns if p not in visible and not (p == "beak_shape" and "beak_colour" in visible)]
    shown = [p for p in nouns if p in visible]
    if hidden and len(shown) >= 3:
        kinds.append("hidden")
    out = []
    for kind in rng.sample(kinds, min(n, len(kinds))):
        if kind in SCENE_OPTIONS:
            options, answer = _options(scene[kind], SCENE_OPTIONS[kind], rng)
        elif kind == "hidden":
            target = rng.choice(hidden)
            pool = {p: nouns[p] for p in [target, *rng.sample(shown, 3)]}
            options, answer = _options(target, pool, rng)
        else:
            options, answer = _options(attrs[kind], _part_pool(kind), rng)
        out.append({"kind": kind, "question": QUESTIONS[kind], "options": options, "answer": answer})
    return out


@lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Every lower-case word that any caption, VQA item or concept phrase can contain.

    Read from the string literals of the modules that write the text, so a new wording is
    covered automatically; species names are chosen to avoid all of these words.
    """
    words: set[str] = set()
    for module in (phrases, sys.modules[__name__]):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.update(w.lower() for w in re.findall(r"[A-Za-z]+", node.value))
    return frozenset(words)
