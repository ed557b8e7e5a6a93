"""Prompt pools per dataset kind: description prompts, and simple / explain / chain-of-thought questions.

The reference used 3 description prompts and question pools of three styles; the first explain
question of a kind is the evaluation question. ``{noun}`` is the kind's object word ("bird",
"dog", ...). Pools are data, so a user can pass their own JSON file with the same keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfsynth.errors import ConfigError

NOUNS = {
    "birds": ("bird", "species"),
    "dogs": ("dog", "breed"),
    "aircraft": ("aircraft", "model"),
    "leaves": ("leaf", "disease"),
    "dermoscopy": ("skin lesion", "diagnosis"),
    "chest_xray": ("chest X-ray", "finding"),
    "generic": ("object", "category"),
}

_DESCRIBE = [
    "Describe the {noun} in this image in detail.",
    "What visual features does the {noun} in this image have?",
    "Describe the colors, shapes and markings of the {noun}.",
    "Look closely at the {noun} and describe what you see.",
]
_SIMPLE = [
    "What is the {what} of this {noun}?",
    "What {what} is shown in this image?",
    "Name the {what} of the {noun} in this picture.",
    "Which {what} is this {noun}?",
]
_EXPLAIN = [
    "What is the {what} of this {noun}? Explain why.",
    "Which {what} is shown in this image, and what visual evidence supports it?",
    "Identify the {what} of the {noun} and justify your answer.",
    "What {what} is this {noun}, and which features tell you so?",
]
_COT = [
    "First describe the visible features of the {noun}, then name its {what}.",
    "Look at the features of the {noun} step by step, then tell me its {what}.",
    "List what you can see on the {noun}, then conclude which {what} it is.",
]


@dataclass(frozen=True)
class PromptPools:
    describe: list[str]
    simple: list[str]
    explain: list[str]
    cot: list[str]

    @property
    def eval_question(self) -> str:
        """The evaluation question: the kind's first explain question (as the paper)."""
        return self.explain[0]

    def by_kind(self, kind: str) -> list[str]:
        return {"simple": self.simple, "explain": self.explain, "cot": self.cot}[kind]


def pools_for(kind: str, override: str | Path | None = None) -> PromptPools:
    """Pools for a dataset kind, optionally replaced key by key from a JSON file."""
    if kind not in NOUNS:
        raise ConfigError(f"data.kind={kind!r} is not one of {', '.join(NOUNS)}")
    noun, what = NOUNS[kind]

    def fill(items: list[str]) -> list[str]:
        return [q.format(noun=noun, what=what) for q in items]

    pools = {
        "describe": fill(_DESCRIBE),
        "simple": fill(_SIMPLE),
        "explain": fill(_EXPLAIN),
        "cot": fill(_COT),
    }
    if override:
        p = Path(override)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{p}: cannot read prompt pools ({e})") from None
        for key, value in data.items():
            if key not in pools:
                raise ConfigError(f"{p}: unknown pool '{key}' (expected {', '.join(pools)})")
            if not (
                isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
            ):
                raise ConfigError(f"{p}: pool '{key}' must be a non-empty list of strings")
            pools[key] = list(value)
    return PromptPools(**pools)


def concept_prompt(label: str, concepts: list[str], question: str, noun: str = "bird") -> str:
    """The round-1 synthesis prompt: the label and the selected concepts are given, then the question."""
    feats = "\n".join(f"- {c}" for c in concepts)
    return (
        f"This is a picture of a {label} with the following visual features:\n{feats}\n"
        f"Use this information to answer: {question}"
    )


def vqa_prompt(question: str, options: dict[str, str]) -> str:
    """A multiple-choice question as the models see it (general-ability test and its training data)."""
    opts = "\n".join(f"{k}. {v}" for k, v in sorted(options.items()))
    return f"{question}\n{opts}\nAnswer with the option's letter."


# New tokens a model needs for a multiple-choice answer: a letter, or the ``vqa_answer`` form
# ("Wing bars: two yellow wing bars." is 10 tokens of the embedded tokenizer).
VQA_MAX_NEW_TOKENS = 24


def vqa_answer(letter: str, options: dict[str, str], subject: str = "Answer") -> str:
    """The training target of a multiple-choice question: what it asks about, then the right option's text.

    "Wings: black." (``subject`` names what the question asks about; the world's questions get
    theirs from ``world.text.vqa_subject``). The base model and every round's general-ability
    mix train on this one form; ``metrics.read_choice`` reads the choice as the option whose
    text the answer states, the rule MMBench applies to answers without a letter.

    Why the subject first: crown, wings, beak and legs share one set of colour options, and a
    build whose answers began "Answer: <colour>." named the crown's colour for the wings (wing
    colour right in 32 % of questions while its descriptions stated it right in 77 %; 23 % for
    a build trained on "Answer: <colour>." alone). Named just
    before the value, the part is what the decoder attends from, as in its descriptions and
    open answers ("its wings are black").

    Why no letter: a letter has to be looked up, by content, in the shuffled option list, and
    the embedded 4-layer decoder does not learn that look-up in its budget. On fresh decoders,
    800 steps of text-only drills whose prompt states the right option, the letter stayed at
    chance (20-29 %) with the letter straight after the value, with options written "orange
    (B)" so the letter follows the text, with the options restated before the answer, and with
    checks of each option in turn ("A. red? No. B. orange? Yes, so the answer is B": the Yes
    followed the check's position, not the value), even with 30 % of the rows given to content
    look-up drills (docs/architecture.md).
    """
    return f"{subject}: {options[letter]}."


def world_vqa_answer(item: Mapping[str, Any], letter: str | None = None) -> str:
    """``vqa_answer`` for one of the world's VQA items (``kind``, ``options``, ``answer``).

    The answer for the item's right option, or for ``letter``'s (likelihood scoring asks for
    each option), under the subject of the item's kind: one place decides the form that the
    base's pretraining, its drills, every round's general mix and the evaluation share.
    """
    from selfsynth.data.world.text import vqa_subject

    return vqa_answer(letter or item["answer"], item["options"], vqa_subject(item.get("kind", "")))
