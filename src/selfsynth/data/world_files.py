"""The embedded world's files on disk: ``DIR/train.jsonl``, ``DIR/test.jsonl``, ``DIR/concepts.json``.

This reads what the world generator (``selfsynth.data.world``) wrote; it does not draw anything.
Each line is ``{"id", "image" (relative to DIR), "label", "visible_concepts": [...],
"attributes": {...}, ...}``; everything beyond id, image and label is kept in ``Example.meta``
(the visible concepts are the ground truth for concept grounding). The concept bank is
``DIR/concepts.json`` (see ``selfsynth.data.registry.concept_bank_path``).
"""

from __future__ import annotations

from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems
from selfsynth.data.manifest import iter_jsonl_rows, row_to_example
from selfsynth.errors import DataError
from selfsynth.records import Example


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = Path(cfg.root)
    path = root / f"{split}.jsonl"
    if not path.is_file():
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
