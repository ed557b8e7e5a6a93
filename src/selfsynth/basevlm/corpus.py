"""The base VLM's pretraining data: a world of its own, tokenizer text, and (image, prompt, answer) triples.

Like LLaVA's instruction data, the triples teach the model to look and to follow a prompt, never
to know a species: captions under the describe prompts, the world's multiple-choice VQA (in
the pipeline's prompt format), short open questions about parts, pose and background, a
no-name answer to "what species is this?", and answers that use a label given in the prompt
(the round-1 synthesis prompt "This is a picture of a {label} with the following visual
features: ...", and short "this bird is a {label}" drills) where the label is a random pairing
of name words shown with a random image, so the model learns to use a label it is told without
learning which bird any name belongs to. No species name of the pretraining world appears in
the pretraining text.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from selfsynth.basevlm.pretrain import Triple
from selfsynth.basevlm.probe import PartTargets, part_targets
from selfsynth.data.world.text import world_vqa_answer
from selfsynth.io import read_json, read_jsonl
from selfsynth.prompts import cited_answer, concept_prompt, listed, pools_for, vqa_prompt

# Describe prompts that ask for everything visible get the full caption styles (0: sentences,
# 3: feature list); brief prompts get every style. The world writes a record's captions in
# style order 0..4 (``data.world.text.captions``).
FULL_STYLES = (0, 3)
BRIEF_PROMPTS = (
    "Describe this bird.",
    "Describe this image.",
    "What do you see in this picture?",
    "Briefly describe the bird.",
    "What does this bird look like?",
)
NO_NAME_ANSWERS = (
    "I cannot tell the exact species from the picture alone. It is a bird with {features}.",
    "I can't name its species from this image, but I can see {features}.",
    "The species is not clear to me. The bird has {features}.",
)
SCENE_ANSWERS = {
    "pose": {"perched": "The bird is perched on a branch.", "flying": "The bird is flying."},
    "facing": {"left": "It is facing left.", "right": "It is facing right."},
    "background": {
        "sky": "The background is sky.",
        "water": "The background is water.",
        "foliage": "The background is green foliage.",
        "sand": "The background is sand.",
    },
}
_NAME_ORDER = 3  # letters of context in the made-up name generator


@dataclass
class ImageRecord:
    """One pretraining image with what the world knows about it."""

    id: str
    image: str  # absolute path
    attributes: dict[str, str]
    visible_parts: list[str]
    visible_concepts: list[str]
    scene: dict[str, Any]


class LazyImages(Sequence):
    """Image paths that open as RGB PIL images on indexing (slices give lists)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # noqa: ANN001, ANN204
        from PIL import Image

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        with Image.open(self.paths[i]) as im:
            return im.convert("RGB")


def ensure_world(out: Path, s: Any, *, progress: bool = True) -> Path:
    """Draw the pretraining world into ``out`` unless it is complete (world.json is written last)."""
    from selfsynth.data.world import make_world
    from selfsynth.data.world.make import draw_workers

    if not (out / "world.json").is_file():
        make_world(
            out,
            species=s.species,
            train_per_class=s.train_per_class,
            test_per_class=max(1, s.train_per_class // 8),
            species_seed=s.species_seed,
            image_seed=s.image_seed,
            size=s.image_size,
            progress=progress,
            workers=draw_workers(),
        )
    return out


def load_records(world: Path) -> list[ImageRecord]:
    """Every image of the pretraining world (both splits: all of it is pretraining data)."""
    out = []
    for split in ("train", "test"):
        for r in read_jsonl(world / f"{split}.jsonl"):
            scene = {
                k: r.get(k) for k in ("pose", "facing", "head_turned", "background", "occluder", "occluded")
            }
            out.append(
                ImageRecord(
                    id=r["id"],
                    image=str((world / r["image"]).resolve()),
                    attributes=r["attributes"],
                    visible_parts=list(r["visible_parts"]),
                    visible_concepts=list(r["visible_concepts"]),
                    scene=scene,
                )
            )
    return out


@lru_cache(maxsize=1)
def _name_model() -> tuple[dict[str, list[str]], frozenset[str]]:
    """A letter Markov chain over the world's name words, and those words (lower case)."""
    from selfsynth.data.world.species import FIRST_WORDS, GENUS_WORDS

    words = [w.lower() for w in FIRST_WORDS + GENUS_WORDS]
    chain: dict[str, list[str]] = {}
    for w in words:
        padded = "^" * _NAME_ORDER + w + "$"
        for i in range(len(w) + 1):
            chain.setdefault(padded[i : i + _NAME_ORDER], []).append(padded[i + _NAME_ORDER])
    return chain, frozenset(words)


def nonce_name(rng: random.Random) -> str:
    """A made-up two-word label that looks like a species name but contains no word of one.

    Letters follow a Markov chain of the name word lists, so made-up names split into the same
    kinds of tokens as real ones; any word that contains a real name word is redrawn. The space
    of names is far too large to memorise, so answering with one means copying it from the
    prompt, which is what the round-1 synthesis prompt needs of the base model.
    """
    chain, real = _name_model()

    def word() -> str:
        while True:
            out, ctx = "", "^" * _NAME_ORDER
            while len(out) < 14:
                nxt = rng.choice(chain[ctx])
                if nxt == "$":
                    break
                out += nxt
                ctx = ctx[1:] + nxt
            if 4 <= len(out) <= 13 and not any(r in out or out in r for r in real):
                return out.capitalize()

    return f"{word()} {word()}"


def drill_name(rng: random.Random, avoid: frozenset[str] = frozenset()) -> str:
    """A label for the label-use drills: half Markov-chain nonce names, half built like species names.

    Species names pair a first word with a genus word from the world's name lists (or invented
    ones with the same endings). Those exact words must appear as drill labels: a word piece that
    is never a training target keeps its random embedding, and the model could not copy it (with
    nonce names only, it repeated nonce names and garbled every real one). Pairs are random and
    shown with random images, so the model learns to repeat a label it is told, never which
    bird one belongs to. ``avoid``: labels (lower case) never to draw, e.g. the pretraining
    world's own species.
    """
    from selfsynth.data.world.species import FIRST_WORDS, GENUS_WORDS, _invented_word

    while True:
        if rng.random() < 0.5:
            name = nonce_name(rng)
        else:
            first = rng.choice(FIRST_WORDS) if rng.random() < 0.8 else _invented_word(rng, "ian")
            genus = rng.choice(GENUS_WORDS) if rng.random() < 0.8 else _invented_word(rng, "let")
            name = f"{first} {genus}"
        if name.lower() not in avoid:
            return name


def tokenizer_corpus(world: Path, s: Any) -> Iterator[str]:
    """World text, prompts, concept phrases of many species seeds, and many made-up names.

    Real species names are left out on purpose: a name seen as one merged token here would be a
    token the model never trains on (names are never targets), which it could not copy from a
    prompt. Made-up names teach merges of name-like pieces, so a real name splits into a few
    pieces that the model has learned to copy.
    """
    from selfsynth.data.world import make_species
    from selfsynth.data.world.text import lexicon

    for r in read_jsonl(world / "captions.jsonl"):
        yield from r["captions"]
    for q in read_jsonl(world / "vqa.jsonl"):
        yield vqa_prompt(q["question"], q["options"])
        yield world_vqa_answer(q)
    pools = pools_for("birds")
    for pool in (pools.describe, pools.simple, pools.explain, pools.cot, BRIEF_PROMPTS, NO_NAME_ANSWERS):
        yield from pool
    for table in SCENE_ANSWERS.values():
        yield from table.values()
    forbidden = set(lexicon())
    for seed in sorted({0, s.species_seed, *range(s.concept_seeds)}):
        for sp in make_species(max(s.species, 16), seed, forbidden_words=forbidden):
            yield "\n".join(f"- {c}" for c in sp.concepts)
    rng = random.Random(0)
    for _ in range(5000):
        yield f"This is a picture of a {nonce_name(rng)}."


def _features(rec: ImageRecord, rng: random.Random, k: int = 3) -> str:
    from selfsynth.data.world.phrases import noun_phrase

    parts = [p for p in rec.visible_parts if p != "size"] or rec.visible_parts
    pick = rng.sample(parts, min(k, len(parts)))
    nps = [noun_phrase(p, rec.attributes[p], rng) for p in pick]
    return listed(nps)


def _open_questions(rec: ImageRecord, rng: random.Random, n: int) -> list[Triple]:
    """Short open answers about parts (visible or hidden) and the scene."""
    from selfsynth.data.world.phrases import PART_NOUNS, PARTS, clause_phrase
    from selfsynth.data.world.text import QUESTIONS

    out = []
    kinds = [k for k in (*PARTS, "pose", "facing", "background") if k in QUESTIONS]
    for kind in rng.sample(kinds, min(n, len(kinds))):
        if kind in SCENE_ANSWERS:
            answer = SCENE_ANSWERS[kind][rec.scene[kind]]
        elif kind in rec.visible_parts:
            clause = clause_phrase(kind, rec.attributes[kind], rng)
            answer = clause[:1].upper() + clause[1:] + "."
        else:
            noun = PART_NOUNS[kind]
            verb = "are" if noun.endswith("s") else "is"
            answer = f"The {noun} {verb} not visible in this picture."
        out.append(Triple(-1, QUESTIONS[kind], answer))
    return out


def _in_context(rec: ImageRecord, rng: random.Random, avoid: frozenset[str] = frozenset()) -> Triple:
    """The synthesis prompt with a drill label; the answer names it and cites the given features."""
    pools = pools_for("birds")
    name = drill_name(rng, avoid)
    given = rng.sample(rec.visible_concepts, min(len(rec.visible_concepts), rng.randint(3, 5)))
    style = rng.choice(("simple", "explain", "cot"))
    question = rng.choice(pools.by_kind(style))
    if style == "simple":
        answer = rng.choice((f"This is a {name}.", f"It is a {name}.", f"The bird is a {name}."))
    else:
        answer = cited_answer(name, given, style)
    return Triple(-1, concept_prompt(name, given, question), answer)


def _name_drill(rng: random.Random, avoid: frozenset[str] = frozenset()) -> Triple:
    """The shortest form of using a given label: told the name, asked for it."""
    pools = pools_for("birds")
    name = drill_name(rng, avoid)
    intro = rng.choice(
        ("This is a picture of a {}.", "The bird in this picture is a {}.", "This bird is a {}.")
    )
    question = rng.choice(pools.simple)
    answer = rng.choice(("This is a {}.", "It is a {}.", "The bird is a {}."))
    return Triple(-1, f"{intro.format(name)} {question}", answer.format(name))


def make_triples(
    world: Path,
    records: Sequence[ImageRecord],
    *,
    seed: int = 0,
    vqa_per_image: int = 6,
    open_per_image: int = 3,
    in_context_per_image: int = 2,
    drills_per_image: int = 2,
    describe_targets: str = "captions",
) -> list[Triple]:
    """All pretraining triples; ``Triple.image`` indexes ``records``.

    Brief prompts get every world caption style; the describe prompts (which ask for all that
    is visible) get two full descriptions per image, each under two prompts: with
    ``describe_targets="clauses"`` noun-first ones (``world.text.clause_caption``), with
    ``"captions"`` the world's full caption styles (``FULL_STYLES``).
    """
    from selfsynth.data.world.text import clause_caption, vqa

    if describe_targets not in ("clauses", "captions"):
        raise ValueError(f"describe_targets={describe_targets!r}: choose 'clauses' or 'captions'")

    pools = pools_for("birds")
    caps = {r["id"]: r["captions"] for r in read_jsonl(world / "captions.jsonl")}
    rng = random.Random(f"selfsynth-base-triples:{seed}")
    avoid = species_label_set(world)
    out: list[Triple] = []
    for i, rec in enumerate(records):
        items: list[Triple] = []
        for style, caption in enumerate(caps.get(rec.id, [])):
            items.append(Triple(i, rng.choice(BRIEF_PROMPTS), caption))
            if style in FULL_STYLES:
                full = (
                    caption
                    if describe_targets == "captions"
                    else clause_caption(rec.attributes, rec.visible_parts, rec.scene, rng)
                )
                items.extend(Triple(i, p, full) for p in rng.sample(pools.describe, 2))
        for q in vqa(rec.attributes, rec.visible_parts, rec.scene, rng, vqa_per_image):
            items.append(
                Triple(
                    i,
                    vqa_prompt(q["question"], q["options"]),
                    world_vqa_answer(q),
                )
            )
        items.extend(_open_questions(rec, rng, open_per_image))
        if rng.random() < 0.5:
            question = rng.choice(pools.simple + pools.explain)
            items.append(
                Triple(i, question, rng.choice(NO_NAME_ANSWERS).format(features=_features(rec, rng)))
            )
        items.extend(_in_context(rec, rng, avoid) for _ in range(in_context_per_image))
        items.extend(_name_drill(rng, avoid) for _ in range(drills_per_image))
        out.extend(Triple(i, t.question, t.answer) for t in items)
    return out


def text_drills(
    records: Sequence[ImageRecord], *, seed: int = 0, n: int = 20000, avoid: frozenset[str] = frozenset()
) -> list[Triple]:
    """Text-only copy drills for the pretraining warm-up (``Triple.image`` is -1: no image).

    Three ways of using what the prompt says, in the formats the image data uses later: a
    made-up label to repeat, the round-1 synthesis prompt (label and features to cite), and a
    multiple-choice question whose right option the prompt states, answered with that option
    and its letter. Once the decoder copies reliably from text, the image steps only have to
    teach it where the image says the same thing.
    """
    from selfsynth.data.world.text import vqa

    rng = random.Random(f"selfsynth-base-drills:{seed}")
    out: list[Triple] = []
    while len(out) < n:
        rec = records[rng.randrange(len(records))]
        kind = rng.random()
        if kind < 0.3:
            out.append(_name_drill(rng, avoid))
        elif kind < 0.65:
            out.append(_in_context(rec, rng, avoid))
        else:
            q = vqa(rec.attributes, rec.visible_parts, rec.scene, rng, 1)[0]
            hint = rng.choice(("Hint: {}.", "Someone says: {}.", "The right option is: {}."))
            prompt = hint.format(q["options"][q["answer"]]) + "\n" + vqa_prompt(q["question"], q["options"])
            out.append(Triple(-1, prompt, world_vqa_answer(q)))
    return out


def part_targets_for(records: Sequence[ImageRecord], *, scene: bool = False) -> PartTargets:
    """Visible part values per image, for the pretraining loop's auxiliary part probe.

    ``scene``: pose, facing and background join the parts (always shown). Why: the decoder
    learns them from its text targets alone much more slowly than parts that the probe drives.
    """
    from selfsynth.data.world.phrases import PARTS
    from selfsynth.data.world.text import OPTION_WORDS, SCENE_OPTIONS

    values = dict(PARTS)
    words = dict(OPTION_WORDS)
    attributes = [dict(r.attributes) for r in records]
    visible = [list(r.visible_parts) for r in records]
    if scene:
        for kind, options in SCENE_OPTIONS.items():
            real = [v for v in options if not v.startswith("_")]  # "_a", "_b": distractors only
            values[kind] = real
            words[kind] = {v: options[v] for v in real}
            for rec, attrs, vis in zip(records, attributes, visible, strict=True):
                if rec.scene.get(kind) in real:
                    attrs[kind] = rec.scene[kind]
                    vis.append(kind)
    # values are named as the world's multiple-choice options name them ("short and conical")
    return part_targets(attributes, visible, values, words=words)


def world_species_labels(world: Path) -> list[str]:
    return [s["label"] for s in read_json(world / "world.json")["species"]]


def species_label_set(world: Path) -> frozenset[str]:
    """The world's species labels in lower case: what drill labels must never be (``avoid``)."""
    return frozenset(label.lower() for label in world_species_labels(world))


def dump_triples(triples: Sequence[Triple], path: Path) -> None:
    """For inspection: the triples as JSON lines."""
    path.write_text("".join(json.dumps(t.__dict__) + "\n" for t in triples), encoding="utf-8")
