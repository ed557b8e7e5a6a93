"""Multiple-choice scoring: greedy answers and the option each one picks, or the likeliest option.

Every multiple-choice figure (the VLMEvalKit TSV runner, the base model's check, the evaluate
stage's general VQA) goes through ``answer_choices``: one greedy answer per item from the model
backend, read by ``read_choice`` (a stated letter; without one, the one option whose text the
answer states: MMBench's rule). ``likeliest_options`` scores the same items by option
likelihood instead (SEED-Bench's and the lm-eval harness's protocol). Callers differ only in
how they build each item's image and prompt and in what they record next to each ``Choice``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar

from tqdm import tqdm

from selfsynth.text import normalize

Item = TypeVar("Item")

# An explicit "answer is X" first; only without one, "option X" or a leading "X." / "(X)".
_STATED = re.compile(r"\b(?:answer is|answer:)\s*\(?([A-Z])\b")
_LETTER = re.compile(r"\boption\s*\(?([A-Z])\b|^\s*\(?([A-Z])[\.\):]?(?:\s|$)")
_STATED_TEXT = re.compile(r"\b(?:answer is|answer:)\s*([^.\n]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Choice:
    """One greedy answer: its text (stripped), the option key it picks (None: none), and whether that is the key."""

    text: str
    pred: str | None
    correct: bool


def parse_letter(answer: str, letters: str = "ABCD") -> str | None:
    """The option letter a multiple-choice answer commits to, or None."""
    text = answer.strip()
    # An explicit "answer is X" wins over a leading "A." (answers that check options in turn
    # begin with "A. ..." whatever they conclude).
    m = _STATED.search(text) or _LETTER.search(text)
    if m:
        letter = next(g for g in m.groups() if g)
        if letter in letters:
            return letter
    return None


def read_choice(answer: str, options: Mapping[str, str]) -> str | None:
    """The option a multiple-choice answer picks: a stated letter, else a stated option text.

    In order: the letter ``parse_letter`` finds; the option whose text an explicit "Answer:
    <text>" / "the answer is <text>" states (up to the sentence's end); the one option whose
    text the whole answer states. The text rules are MMBench's for answers without a letter,
    and read how the embedded base model answers (``prompts.vqa_answer``: "Wings: black.").
    Longer option texts are matched first and taken out, so "slender" is not also read inside
    "long and slender"; two or more stated options, or none, pick nothing.
    """
    letter = parse_letter(answer, "".join(options))
    if letter is not None:
        return letter
    stated = _STATED_TEXT.search(answer)
    if stated:
        pick = _option_in(stated.group(1), options)
        if pick is not None:
            return pick
    return _option_in(answer, options)


def _option_in(text: str, options: Mapping[str, str]) -> str | None:
    """The one option whose (normalised) text ``text`` contains, longest texts first; else None."""
    rest = f" {normalize(text)} "
    hits = []
    named = {key: normalize(value) for key, value in options.items()}
    for key, value in sorted(named.items(), key=lambda kv: -len(kv[1])):
        if value and f" {value} " in rest:
            hits.append(key)
            rest = rest.replace(f" {value} ", "  ")
    return hits[0] if len(hits) == 1 else None


def answer_choices(
    backend: Any,
    items: Sequence[Item],
    *,
    image_for: Callable[[Item], Any],
    prompt_for: Callable[[Item], str],
    options_for: Callable[[Item], Mapping[str, str]] = itemgetter("options"),
    answer_for: Callable[[Item], str] = itemgetter("answer"),
    batch_size: int,
    max_new_tokens: int,
    seed: int = 0,
    chunk_size: int = 0,
    progress: bool = False,
    desc: str = "choices",
) -> list[Choice]:
    """One greedy answer per item from ``backend.generate`` and the option it picks, in item order.

    ``options_for`` / ``answer_for`` default to the world's ``vqa.jsonl`` record (``options``:
    key -> text, ``answer``: the right key). ``chunk_size`` > 0 sends the items in chunks of that
    many (a progress bar per chunk, and images built one chunk at a time); 0 sends them in one
    call, whose own progress bar ``progress`` turns on.
    """
    step = chunk_size if chunk_size > 0 else max(len(items), 1)
    chunked = chunk_size > 0
    out: list[Choice] = []
    for s in tqdm(range(0, len(items), step), desc=desc, unit="chunk", disable=not (progress and chunked)):
        chunk = items[s : s + step]
        answers = backend.generate(
            [image_for(it) for it in chunk],
            [prompt_for(it) for it in chunk],
            n=1,
            temperature=0.0,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            progress=progress and not chunked,
        )
        for it, a in zip(chunk, answers, strict=True):
            text = a[0].strip()
            pred = read_choice(text, options_for(it))
            out.append(Choice(text=text, pred=pred, correct=pred == answer_for(it)))
    return out


def likeliest_options(
    backend: Any,
    items: Sequence[Item],
    *,
    image_for: Callable[[Item], Any],
    prompt_for: Callable[[Item], str],
    reply_for: Callable[[Item, str], str],
    options_for: Callable[[Item], Mapping[str, str]] = itemgetter("options"),
    batch_size: int,
) -> list[str]:
    """Each item's option key whose reply ``reply_for(item, key)`` ``backend.answer_logprobs`` scores highest.

    All (item, option) pairs go in one call, item by item, options in sorted key order; a tie
    goes to the first key.
    """
    pairs = [(it, k) for it in items for k in sorted(options_for(it))]
    scores = backend.answer_logprobs(
        [image_for(it) for it, _ in pairs],
        [prompt_for(it) for it, _ in pairs],
        [reply_for(it, k) for it, k in pairs],
        batch_size=batch_size,
    )
    picked, at = [], 0
    for it in items:
        keys = sorted(options_for(it))
        group = scores[at : at + len(keys)]
        picked.append(keys[group.index(max(group))])
        at += len(keys)
    return picked


def choice_accuracy(correct: Sequence[bool]) -> float:
    """The fraction of true flags; 0.0 for none."""
    return sum(correct) / len(correct) if correct else 0.0
