"""Check a base VLM on a held-out world: grounded descriptions, generic VQA, and that it names no species.

The held-out world has seeds of its own (neither the pretraining world's nor a task world's), so
every image and species is new to the model. Figures (all on the held-out test split):

- ``attribute_accuracy``: over every (description, visible part) where the description states
  the part's value (read by ``vocab.parse_attributes``), the fraction stated correctly; also
  ``parts_mentioned`` (visible parts stated per description) and ``hidden_stated`` (statements
  about parts the image does not show, per description). Greedy and at T=1.0.
- ``vqa_accuracy``: the world's four-option questions, greedy, the choice read by
  ``metrics.choice.read_choice`` (a stated letter, else the one option whose text the answer states:
  MMBench's rule; the embedded base answers "Wings: <text>.", see ``prompts.vqa_answer``);
  ``vqa_letters``: the fraction of answers that state a letter; ``vqa_by_kind``: accuracy per
  question kind (part, pose, facing, background, hidden part).
  ``vqa_choice_accuracy``: the same questions by option likelihood (as SEED-Bench and the
  lm-eval harness score multiple choice): the option whose answer in the trained form
  (``prompts.vqa_answer``, "Wings: <text>.") the model finds most probable is its choice. It
  reads what the model sees, free of how it words its answer.
- ``names_species``: fraction of answers (descriptions and species questions) that contain any
  species name of the world; ``species_accuracy``: answers to "What species is this bird?"
  that contain the true name, against ``chance`` = 1 / species.
- ``distinct_4``: distinct 4-grams / all 4-grams over the T=1.0 descriptions of each
  (image, prompt), averaged (variety between samples of the same input), and corpus-wide.
- ``uses_given_label``: answers to the round-1 synthesis prompt (label and visible concepts
  given, then an explain question) that contain the given label; the self-synthesis loop needs
  the base model to use a label it is told, although it can never name one by itself.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsynth.data.world.text import world_vqa_answer
from selfsynth.io import read_json, read_jsonl
from selfsynth.metrics.choice import answer_choices, choice_accuracy, likeliest_options, parse_letter
from selfsynth.prompts import VQA_MAX_NEW_TOKENS, concept_prompt, pools_for, vqa_prompt
from selfsynth.text import label_in, normalize

logger = logging.getLogger(__name__)

SPECIES_QUESTION = "What species is this bird?"


def _ngrams(text: str, n: int = 4) -> list[tuple[str, ...]]:
    words = normalize(text).split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 4) -> float:
    grams = [g for t in texts for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def attribute_scores(texts: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Attribute accuracy of descriptions ``texts[i]`` of images ``rows[i]`` (see module docstring)."""
    from selfsynth.data.world.vocab import parse_attributes

    stated = correct = mentioned = hidden = 0
    by_part: dict[str, list[int]] = {}
    for text, row in zip(texts, rows, strict=True):
        values = parse_attributes(text)
        visible = set(row["visible_parts"])
        for part, value in values.items():
            if part in visible:
                stated += 1
                mentioned += 1
                right = value == row["attributes"][part]
                correct += right
                tally = by_part.setdefault(part, [0, 0])
                tally[0] += right
                tally[1] += 1
            else:
                hidden += 1
    n = max(1, len(texts))
    return {
        "attribute_accuracy": correct / stated if stated else 0.0,
        "parts_mentioned": mentioned / n,
        "visible_parts": sum(len(r["visible_parts"]) for r in rows) / n,
        "hidden_stated": hidden / n,
        "statements": stated,
        "per_part": {p: round(c / n_p, 3) for p, (c, n_p) in sorted(by_part.items())},
    }


def make_eval_world(
    out: Path, *, species: int, per_class: int, species_seed: int, image_seed: int, size: int = 128
) -> Path:
    from selfsynth.data.world import make_world

    if not (out / "world.json").is_file():
        make_world(
            out,
            species=species,
            train_per_class=1,
            test_per_class=per_class,
            species_seed=species_seed,
            image_seed=image_seed,
            size=size,
        )
    return out


def evaluate_base(
    model_dir: str | Path,
    *,
    species: int = 16,
    per_class: int = 6,
    species_seed: int = 2001,
    image_seed: int = 2002,
    samples: int = 2,
    prompts: int = 3,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    seed: int = 0,
    world_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """All figures of the module docstring for the model in ``model_dir``."""
    from selfsynth.models.vlm import VLM

    with tempfile.TemporaryDirectory(prefix="selfsynth-base-eval-") as tmp:
        world = make_eval_world(
            Path(world_dir) if world_dir else Path(tmp) / "world",
            species=species,
            per_class=per_class,
            species_seed=species_seed,
            image_seed=image_seed,
        )
        rows = read_jsonl(world / "test.jsonl")
        labels = [s["label"] for s in read_json(world / "world.json")["species"]]
        vqa = [q for q in read_jsonl(world / "vqa.jsonl") if q["split"] == "test"]
        for r in rows:
            r["path"] = str(world / r["image"])
        vlm = VLM.load(model_dir, feature_cache=True)
        describe = pools_for("birds").describe[:prompts]
        pairs = [(r, p) for r in rows for p in describe]
        imgs = [r["path"] for r, _ in pairs]
        texts = [p for _, p in pairs]
        kw = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "progress": progress}
        greedy = [g[0] for g in vlm.generate(imgs, texts, **kw)]
        sampled = vlm.generate(imgs, texts, n=samples, temperature=1.0, **kw)
        species_ans = [
            g[0] for g in vlm.generate([r["path"] for r in rows], [SPECIES_QUESTION] * len(rows), **kw)
        ]
        told = [
            concept_prompt(r["label"], r["visible_concepts"][:4], pools_for("birds").explain[0]) for r in rows
        ]
        told_ans = [g[0] for g in vlm.generate([r["path"] for r in rows], told, **kw)]

        def image_for(q: dict[str, Any]) -> str:
            return str(world / q["image"])

        def prompt_for(q: dict[str, Any]) -> str:
            return vqa_prompt(q["question"], q["options"])

        vqa_ans = answer_choices(
            vlm,
            vqa,
            image_for=image_for,
            prompt_for=prompt_for,
            batch_size=batch_size,
            max_new_tokens=VQA_MAX_NEW_TOKENS,
            seed=seed,
            progress=progress,
        )
        picked = likeliest_options(
            vlm,
            vqa,
            image_for=image_for,
            prompt_for=prompt_for,
            reply_for=world_vqa_answer,
            batch_size=batch_size,
        )
    vqa_right = [c.correct for c in vqa_ans]
    flat_sampled = [t for group in sampled for t in group]
    all_answers = greedy + flat_sampled + species_ans
    names = sum(any(label_in(a, lab) for lab in labels) for a in all_answers)
    result = {
        "model": str(model_dir),
        "world": {
            "species": species,
            "per_class": per_class,
            "species_seed": species_seed,
            "image_seed": image_seed,
            "test_images": len(rows),
            "vqa_items": len(vqa),
        },
        "prompts": describe,
        "greedy": attribute_scores(greedy, [r for r, _ in pairs]),
        "sampled": attribute_scores(flat_sampled, [r for r, _ in pairs for _ in range(samples)]),
        "vqa_accuracy": choice_accuracy(vqa_right),
        "vqa_letters": choice_accuracy([parse_letter(c.text) is not None for c in vqa_ans]),
        "vqa_by_kind": _by_kind([q.get("kind", "?") for q in vqa], vqa_right),
        "vqa_choice_accuracy": choice_accuracy([k == q["answer"] for k, q in zip(picked, vqa, strict=True)]),
        "names_species": names / max(1, len(all_answers)),
        "species_accuracy": sum(label_in(a, r["label"]) for a, r in zip(species_ans, rows, strict=True))
        / max(1, len(rows)),
        "chance": 1.0 / species,
        "uses_given_label": sum(label_in(a, r["label"]) for a, r in zip(told_ans, rows, strict=True))
        / max(1, len(rows)),
        "distinct_4": sum(distinct_n(g) for g in sampled) / max(1, len(sampled)),
        "distinct_4_corpus": distinct_n(flat_sampled),
        "examples": [
            {"image": r["id"], "prompt": p, "greedy": g, "sampled": s, "visible": r["visible_parts"]}
            for (r, p), g, s in list(zip(pairs, greedy, sampled, strict=True))[:6]
        ]
        + [
            {"image": r["id"], "prompt": SPECIES_QUESTION, "answer": a}
            for r, a in list(zip(rows, species_ans, strict=True))[:3]
        ]
        + [
            {"image": r["id"], "prompt": p, "answer": a}
            for r, p, a in list(zip(rows, told, told_ans, strict=True))[:2]
        ],
    }
    return result


def _by_kind(kinds: Sequence[str], right: Sequence[bool]) -> dict[str, dict[str, float]]:
    out: dict[str, list[bool]] = {}
    for k, r in zip(kinds, right, strict=True):
        out.setdefault(k, []).append(r)
    return {k: {"n": len(v), "accuracy": choice_accuracy(v)} for k, v in sorted(out.items())}


def format_report(res: dict[str, Any]) -> str:
    """A few lines for the command line."""
    g, s = res["greedy"], res["sampled"]
    lines = [
        f"held-out world: {res['world']['test_images']} images, {res['world']['species']} species "
        f"(seeds {res['world']['species_seed']}/{res['world']['image_seed']})",
        f"attribute accuracy  greedy {g['attribute_accuracy']:.1%}  T=1.0 {s['attribute_accuracy']:.1%}  "
        f"(parts stated per description: {g['parts_mentioned']:.1f} / {s['parts_mentioned']:.1f} of "
        f"{g['visible_parts']:.1f} visible; hidden parts stated {g['hidden_stated']:.2f} / {s['hidden_stated']:.2f})",
        f"generic VQA         {res['vqa_accuracy']:.1%} ({res['world']['vqa_items']} items; "
        f"stating a letter {res.get('vqa_letters', 0.0):.1%}; "
        f"by option likelihood {res.get('vqa_choice_accuracy', 0.0):.1%})",
        f"names a species     {res['names_species']:.2%} of answers; species accuracy "
        f"{res['species_accuracy']:.1%} (chance {res['chance']:.1%})",
        f"uses a given label  {res['uses_given_label']:.1%} of answers to the round-1 synthesis prompt",
        f"variety (T=1.0)     distinct-4 {res['distinct_4']:.2f} per input, {res['distinct_4_corpus']:.2f} corpus",
    ]
    return "\n".join(lines)
