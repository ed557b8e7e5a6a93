"""Load one split of a labelled image collection, whatever its format, as ``Example`` records.

The format modules only parse; this module does what every format needs afterwards, once:
refuse duplicate ids, decode every image when asked to or when ``skip_bad`` is on, apply the
per-class caps, refuse an empty split, and report what ``skip_bad`` left out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, Skipped, verify_image
from selfsynth.data.registry import get_capabilities, get_loader
from selfsynth.data.splits import VALIDATION, cap_per_class, carve_validation, check_split
from selfsynth.errors import DataError
from selfsynth.records import Example

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """One loaded split plus what was left out of it and why."""

    format: str
    root: str
    split: str
    examples: list[Example]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return class_names(self.examples)

    def per_class(self) -> dict[str, int]:
        counts = Counter(e.label for e in self.examples)
        return {name: counts[name] for name in sorted(counts)}

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (what ``selfsynth data inspect --json`` prints)."""
        return {
            "format": self.format,
            "root": self.root,
            "split": self.split,
            "images": len(self.examples),
            "classes": len(self.per_class()),
            "labels": self.labels,
            "per_class": self.per_class(),
            "skipped": [s.to_dict() for s in self.skipped],
            "skipped_count": len(self.skipped),
        }


def class_names(examples: Iterable[Example]) -> list[str]:
    """The sorted distinct labels of ``examples``."""
    return sorted({e.label for e in examples})


def load_split(cfg: DataConfig, split: str, *, check_images: bool = False) -> LoadReport:
    """Load ``split`` ("train", "validation" or "test") of the dataset ``cfg`` describes.

    With ``cfg.validation_per_class`` > 0, validation is that many training images per class,
    held out of "train"; otherwise it is the format's own validation split where it has one.

    ``check_images`` decodes every image (slow on big sets: minutes per 100k images), otherwise
    only existence is checked. With ``cfg.skip_bad`` each bad record is logged and listed in the
    report's ``skipped`` instead of stopping the load, and every image is decoded here whatever
    ``check_images`` says, because a stage that later met a bad image could not skip it.
    """
    check_split(split)
    loader = get_loader(cfg.format)
    if not cfg.root:
        raise DataError("data.root is not set: point it at the dataset folder (--root DIR or data.root=DIR)")
    root = Path(cfg.root)
    if not root.exists():
        raise DataError(f"data root not found: {root} (check data.root / --root)")
    carve = cfg.validation_per_class > 0 and split != "test"
    if split == VALIDATION and not carve and not get_capabilities(cfg).validation:
        raise DataError(
            f"{cfg.format} data has no validation split of its own: set data.validation_per_class=N "
            "to hold out N training images per class"
        )
    problems = Problems(cfg.skip_bad)
    examples = loader(cfg, "train" if carve else split, problems)
    examples = _drop_duplicate_ids(examples, problems)
    if check_images or cfg.skip_bad:
        examples = _check_images(examples, problems)
    if carve:
        rest, held = carve_validation(
            examples,
            cfg.validation_per_class,
            label=lambda e: e.label,
            key=lambda e: e.id,
            seed=cfg.split_seed,
        )
        examples = held if split == VALIDATION else rest
    cap = cfg.max_train_per_class if split == "train" else cfg.max_test_per_class
    examples = cap_per_class(examples, cap, label=lambda e: e.label, key=lambda e: e.id, seed=cfg.split_seed)
    if not examples:
        note = f" ({len(problems.skipped)} bad records were skipped)" if problems.skipped else ""
        raise DataError(f"the {split} split of {cfg.format} data in {root} is empty{note}")
    if problems.skipped:
        log.warning("%s %s: skipped %d bad records", cfg.format, split, len(problems.skipped))
    log.info("%s %s: %d images, %d classes", cfg.format, split, len(examples), len(class_names(examples)))
    return LoadReport(
        format=cfg.format, root=str(root), split=split, examples=examples, skipped=problems.skipped
    )


def load_examples(cfg: DataConfig, split: str, *, check_images: bool = False) -> list[Example]:
    """The examples of ``split``; see :func:`load_split` for the report with skipped records."""
    return load_split(cfg, split, check_images=check_images).examples


def _drop_duplicate_ids(examples: list[Example], problems: Problems) -> list[Example]:
    seen: dict[str, Example] = {}
    out = []
    for ex in examples:
        if ex.id in seen:
            with problems.item():
                raise DataError(
                    f"duplicate id {ex.id!r} (images {seen[ex.id].image} and {ex.image}); "
                    "ids must be unique within a split"
                )
            continue
        seen[ex.id] = ex
        out.append(ex)
    return out


def _check_images(examples: list[Example], problems: Problems) -> list[Example]:
    out = []
    for ex in tqdm(examples, desc="checking images", unit="img", leave=False, disable=len(examples) < 1000):
        with problems.item():
            verify_image(ex.image, context=f"(record {ex.id!r}, label {ex.label!r})")
            out.append(ex)
    return out
