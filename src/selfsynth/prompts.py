"""Prompt pools per dataset kind: description prompts, and simple / explain / chain-of-thought questions.

The reference used 3 description prompts and question pools of three styles; the first explain
question of a kind is the evaluation question. ``{noun}`` is the kind's object word ("bird",
"dog", ...). ``NOUNS`` lists the kinds: the choices of ``data.kind``.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass

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


QUESTION_KINDS = ("simple", "explain", "cot")  # the kinds of training question the pools hold


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

    def draw(
        self,
        rng: random.Random,
        n: int,
        kinds: Sequence[str] = QUESTION_KINDS,
        weights: Sequence[float] | None = None,
    ) -> list[tuple[str, str]]:
        """``n`` (kind, question) pairs, distinct where the pools allow; ``weights`` per kind of QUESTION_KINDS."""
        pool = [(k, q) for k in kinds for q in self.by_kind(k)]
        w = [weights[QUESTION_KINDS.index(k)] if weights else 1.0 for k, _ in pool]
        w = [x / len(self.by_kind(k)) for x, (k, _) in zip(w, pool, strict=True)]
        out: list[tuple[str, str]] = []
        while len(out) < n:
            left = [(p, x) for p, x in zip(pool, w, strict=True) if p not in out] or list(
                zip(pool, w, strict=True)
            )
            items, ws = zip(*left, strict=True)
            out.append(rng.choices(items, weights=ws, k=1)[0])
        return out


def listed(items: Sequence[str]) -> str:
    """ "a, b and c": how answers and captions list features."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def cited_answer(label: str, concepts: Sequence[str], kind: str, noun: str = "bird") -> str:
    """An explain or chain-of-thought answer that names ``label`` and cites every concept.

    The embedded base model learns this form from its in-context drills, and ``synthesize.answers:
    rule`` writes round-1 answers in it, so both must stay the same text.
    """
    if kind == "cot":
        return f"The {noun} has {listed(concepts)}. These features show that it is a {label}."
    return f"This is a {label}. It has {listed(concepts)}, which are the features of a {label}."


def label_answer(label: str) -> str:
    """The answer that names the class and explains nothing (the NL baseline, the samplers' fallback)."""
    return f"This is an image of {label}."


def pools_for(kind: str) -> PromptPools:
    """The pools of a dataset kind (a key of ``NOUNS``)."""
    if kind not in NOUNS:
        close = difflib.get_close_matches(kind, list(NOUNS), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"data.kind={kind!r} is not one of {', '.join(NOUNS)}{hint}")
    noun, what = NOUNS[kind]

    def fill(items: list[str]) -> list[str]:
        return [q.format(noun=noun, what=what) for q in items]

    return PromptPools(describe=fill(_DESCRIBE), simple=fill(_SIMPLE), explain=fill(_EXPLAIN), cot=fill(_COT))


def concept_prompt(label: str, concepts: list[str], question: str) -> str:
    """The round-1 synthesis prompt: the label and the selected concepts are given, then the question."""
    feats = "\n".join(f"- {c}" for c in concepts)
    return (
        f"This is a picture of a {label} with the following visual features:\n{feats}\n"
        f"Use this information to answer: {question}"
    )


def vqa_prompt(question: str, options: dict[str, str]) -> str:
    """A multiple-choice question as the models see it (general-ability test and its training data).

    It asks for the option's letter, which a stock VLM gives; the embedded base model and its
    rounds answer in the ``vqa_answer`` form instead, and ``metrics.choice.read_choice`` reads
    either. The wording stays as it is because the base model was trained on it.
    """
    opts = "\n".join(f"{k}. {v}" for k, v in sorted(options.items()))
    return f"{question}\n{opts}\nAnswer with the option's letter."


# New tokens a model needs for a multiple-choice answer: a letter, or the ``vqa_answer`` form
# ("Wing bars: two yellow wing bars." is 10 tokens of the embedded tokenizer).
VQA_MAX_NEW_TOKENS = 24


def vqa_answer(letter: str, options: dict[str, str], subject: str = "Answer") -> str:
    """The training target of a multiple-choice question: what it asks about, then the right option's text.

    "Wings: black." (``subject`` names what the question asks about; the world's questions get
    theirs from ``world.text.vqa_subject``). The base model and every round's general-ability
    mix train on this one form; ``metrics.choice.read_choice`` reads the choice as the option
    whose text the answer states, the rule MMBench applies to answers without a letter.

    Why the subject first: crown, wings, beak and legs share one set of colour options, so the
    decoder needs the part named just before the value to know which part to read, as in its
    descriptions and open answers ("its wings are black").

    Why no letter: a letter has to be looked up, by content, in the shuffled option list, and
    the embedded 4-layer decoder does not learn that look-up in its budget (see
    docs/notes/base-model.md).
    """
    return f"{subject}: {options[letter]}."
