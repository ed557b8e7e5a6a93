"""The embedded world's files on disk: ``DIR/train.jsonl``, ``DIR/test.jsonl``, ``DIR/concepts.json``.

This reads what the world generator (``selfsynth.data.world``) wrote; it does not draw anything.
Each line is ``{"id", "image" (relative to DIR), "label", "visible_concepts": [...],
"attributes": {...}, ...}``; everything beyond id, image and label is kept in ``Example.meta``
(the visible concepts are the ground truth for concept grounding). The concept bank is
``DIR/concepts.json``. ``CAPABILITIES`` tells the stages what else the world offers: its concept
bank, its captions and multiple-choice VQA (``captions.jsonl``, ``vqa.jsonl``) as general pairs
and the general-ability test, visible concepts per image, and its own concept citer. Image paths
in every one of these files must stay inside DIR, as the loaders require of any dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, checked_path
from selfsynth.data.manifest import iter_jsonl_rows, row_to_example
from selfsynth.data.registry import Capabilities
from selfsynth.errors import DataError
from selfsynth.io import iter_jsonl
from selfsynth.prompts import vqa_prompt
from selfsynth.records import QA, Example


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = Path(cfg.root)
    path = root / f"{split}.jsonl"
    if not path.is_file():
        if split == "validation" and (root / "world.json").is_file():
            raise DataError(
                f"the world in {root} has no validation split: redraw it with "
                "`selfsynth world make --out DIR` (validation images per species: --validation-per-class)"
            )
        raise DataError(
            f"no {split}.jsonl in {root}: is this a world folder? (create one with `selfsynth world`)"
        )
    out: list[Example] = []
    for n, row in iter_jsonl_rows(path, problems):
        with problems.item():
            if row.get("id") in (None, ""):
                raise DataError("missing 'id'", file=str(path), line=n)
            out.append(row_to_example(row, base=root, split=split, file=path, line=n, image_keys=("image",)))
    return out


def concept_bank(cfg: DataConfig) -> str:
    return str(Path(cfg.root) / "concepts.json")


def general_pairs(cfg: DataConfig, train: Sequence[Example], describe: Sequence[str]) -> list[QA]:
    """The training images' captions (asked with the description prompts in turn), then their VQA items."""
    from selfsynth.data.world.text import world_vqa_answer

    ids = {e.id for e in train}
    images = {str(Path(e.image).resolve()) for e in train}
    root = Path(cfg.root)
    out: list[QA] = []
    captions = root / "captions.jsonl"
    if captions.is_file():
        for n, r in iter_jsonl(captions):
            image = checked_path(root, r.get("image"), file=str(captions), line=n)
            if r["id"] in ids:
                for j, cap in enumerate(r["captions"]):
                    q = describe[j % len(describe)]
                    out.append(QA(f"cap:{r['id']}#{j}", str(image), q, cap, "", "general"))
    vqa = root / "vqa.jsonl"
    if vqa.is_file():
        for n, r in iter_jsonl(vqa):
            image = checked_path(root, r.get("image"), file=str(vqa), line=n)
            if str(image.resolve()) in images:
                out.append(
                    QA(
                        f"vqa:{n}",
                        str(image),
                        vqa_prompt(r["question"], r["options"]),
                        world_vqa_answer(r),
                        "",
                        "general",
                    )
                )
    return out


def general_vqa(cfg: DataConfig) -> list[dict[str, Any]]:
    """Every VQA item, its image as a path under the world folder."""
    root = Path(cfg.root)
    vqa = root / "vqa.jsonl"
    if not vqa.is_file():
        return []
    return [
        {**r, "image": str(checked_path(root, r.get("image"), file=str(vqa), line=n))}
        for n, r in iter_jsonl(vqa)
    ]


def cite_concepts(text: str, phrases: list[str]) -> list[str]:
    """The world's attribute matcher: it parses part/value wordings, so "a scarlet cap" cites "bright red crown"."""
    from selfsynth.data.world.vocab import cited_concepts

    return list(cited_concepts(text, phrases))


CAPABILITIES = Capabilities(
    concept_bank=concept_bank,
    general_pairs=general_pairs,
    general_vqa=general_vqa,
    visibility=True,
    citer=cite_concepts,
    train_manifest="train.jsonl",
    validation=True,
)
