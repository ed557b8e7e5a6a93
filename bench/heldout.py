"""Score a demo's final model on images the demo never saw, decoded two ways.

Draws the demo world's species again with another image seed (test images only), then answers
the evaluation question for each image (a) as the recipe's evaluation decodes (selfsynth's
greedy decoder with its repeat guard) and (b) with a plain transformers ``model.generate``
that reads only the model's shipped ``generation_config.json``. Prints accuracy (substring and
strict) and grounding (precision, recall, concepts cited per answer) for both.

    .venv/bin/python bench/heldout.py demo                   # demo/world + demo/final_model
    .venv/bin/python bench/heldout.py demo --image-seed 11 --per-class 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("heldout")


def draw(world: Path, out: Path, image_seed: int, per_class: int) -> list[dict[str, Any]]:
    """The demo world's species, new images: ``out`` gets a world whose test split is the held-out set."""
    from selfsynth.data.world import make_world
    from selfsynth.data.world.make import draw_workers
    from selfsynth.io import read_json, read_jsonl

    info = read_json(world / "world.json")
    if info["image_seed"] == image_seed:
        sys.exit(f"--image-seed {image_seed} is the demo world's own; pick another")
    make_world(
        out,
        species=info["species_count"],
        train_per_class=1,
        test_per_class=per_class,
        species_seed=info["species_seed"],
        image_seed=image_seed,
        size=info["size"],
        workers=draw_workers(),
    )
    return read_jsonl(out / "test.jsonl")


def plain_generate(model_dir: Path, images: list[str], prompt: str, batch_size: int) -> list[str]:
    """Answers from ``model.generate(**inputs)`` with nothing but the shipped generation config."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import selfsynth  # noqa: F401  (registers the embedded model's tower)
    from selfsynth.models.chat import open_image

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    out = []
    for i in range(0, len(images), batch_size):
        chunk = [open_image(p) for p in images[i : i + batch_size]]
        inputs = processor(images=chunk, text=[text] * len(chunk), return_tensors="pt", padding=True)
        with torch.inference_mode():
            ids = model.generate(**inputs)
        new = ids[:, inputs["input_ids"].shape[1] :]
        out += [s.strip() for s in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def score(rows: list[dict[str, Any]], answers: list[str], labels: list[str], bank: dict) -> dict[str, Any]:
    from selfsynth.data.world_files import cite_concepts
    from selfsynth.metrics.answers import answer_metrics

    scored = [{**r, "answer": a} for r, a in zip(rows, answers, strict=True)]
    m = answer_metrics(scored, labels=labels, bank=bank, grounding=True, citer=cite_concepts)
    keep = ("acc_substring", "acc_strict", "n", "ground_precision", "ground_recall", "cited_per_answer")
    return {k: m.get(k) for k in keep}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo", help="a `selfsynth demo --out` folder (world/ and final_model/)")
    p.add_argument("--model", default="", help="model folder (default: DEMO/final_model)")
    p.add_argument("--image-seed", type=int, default=7, help="seed of the new images (not the demo's)")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from selfsynth.io import read_json
    from selfsynth.models.vlm import VLM
    from selfsynth.prompts import pools_for

    demo = Path(args.demo)
    model_dir = Path(args.model) if args.model else demo / "final_model"
    decoding = read_json(model_dir / "selfsynth_decoding.json")
    bank = read_json(demo / "world" / "concepts.json")
    labels = sorted(bank)
    question = pools_for("birds").eval_question
    with tempfile.TemporaryDirectory() as tmp:
        rows = draw(demo / "world", Path(tmp) / "world", args.image_seed, args.per_class)
        for r in rows:
            r["image"] = str(Path(tmp) / "world" / r["image"])
        images = [r["image"] for r in rows]
        vlm = VLM.load(model_dir)
        ours = [
            o[0].strip()
            for o in vlm.generate(
                images,
                [question] * len(images),
                max_new_tokens=decoding["max_new_tokens"],
                batch_size=args.batch_size,
                no_repeat_ngram=decoding["no_repeat_ngram"],
                allow_repeats=labels,
            )
        ]
        plain = plain_generate(model_dir, images, question, args.batch_size)
        result = {
            "model": str(model_dir),
            "image_seed": args.image_seed,
            "images": len(rows),
            "recipe_decoding": score(rows, ours, labels, bank),
            "plain_generate": score(rows, plain, labels, bank),
            "same_answer": sum(a == b for a, b in zip(ours, plain, strict=True)) / len(rows),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
