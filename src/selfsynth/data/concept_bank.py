"""Concept banks: the expert's visual concepts per class, read from and written to JSON.

Two layouts are read: the plain one selfsynth writes, ``{"<label>": ["concept", ...]}``, and the
layout of the paper's scripts, ``{"1": {"name": "<label>", "visual_features": ["concept", ...]}}``.
Validation reports every problem at once (missing labels, too few concepts, duplicates, empty
strings), because fixing a hand-edited file one error per run is slow.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfsynth.errors import DataError
from selfsynth.io import read_json, write_json

ConceptBank = dict[str, list[str]]


def _concepts(value: Any, label: str, where: str) -> list[str]:
    if not isinstance(value, list):
        raise DataError(
            f"{label!r}: expected a list of concept strings, got {type(value).__name__}", file=where
        )
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, str):
            raise DataError(f"{label!r}: concept {i + 1} is {c!r}, not a string", file=where)
        out.append(" ".join(c.split()))
    return out


def parse_concept_bank(data: Any, where: str = "<concept bank>") -> ConceptBank:
    """A concept bank from already-parsed JSON, in either layout."""
    if not isinstance(data, dict):
        raise DataError('expected a JSON object {"<label>": ["concept", ...]}', file=where)
    bank: ConceptBank = {}
    for key, value in data.items():
        if isinstance(value, dict):
            name = value.get("name")
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"entry {key!r}: missing 'name' (the class label)", file=where)
            if "visual_features" not in value:
                raise DataError(f"entry {key!r} ({name}): missing 'visual_features'", file=where)
            label, concepts = name.strip(), value["visual_features"]
        else:
            label, concepts = str(key).strip(), value
        if label in bank:
            raise DataError(f"label {label!r} appears twice", file=where)
        bank[label] = _concepts(concepts, label, where)
    return bank


def load_concept_bank(path: str | Path) -> ConceptBank:
    """``{label: [concepts]}`` from a JSON file in either layout; whitespace is normalised."""
    return parse_concept_bank(read_json(path), str(path))


def save_concept_bank(path: str | Path, bank: ConceptBank) -> None:
    """Write the plain layout atomically."""
    write_json(path, {label: list(concepts) for label, concepts in bank.items()})


def _norm(concept: str) -> str:
    return " ".join(concept.casefold().split())


def concept_bank_problems(bank: ConceptBank, labels: Iterable[str], min_concepts: int = 3) -> list[str]:
    """Every problem with ``bank`` for a dataset with ``labels``, one short phrase each."""
    problems: list[str] = []
    missing = sorted(set(labels) - set(bank))
    if missing:
        problems.append(f"no concepts for {len(missing)} label(s): {', '.join(missing)}")
    few, dups, empty = [], [], []
    for label in sorted(bank):
        concepts = bank[label]
        kept = [c for c in concepts if c.strip()]
        if len(kept) < len(concepts):
            empty.append(label)
        if len(kept) < min_concepts:
            few.append(f"{label} ({len(kept)})")
        seen: set[str] = set()
        for c in kept:
            if _norm(c) in seen:
                dups.append(f"{label}: {c!r}")
            seen.add(_norm(c))
    if few:
        problems.append(f"fewer than {min_concepts} concepts: {', '.join(few)}")
    if dups:
        problems.append(f"duplicate concepts (ignoring case): {', '.join(dups)}")
    if empty:
        problems.append(f"empty concept strings in: {', '.join(empty)}")
    return problems


def validate_concept_bank(
    bank: ConceptBank, labels: Iterable[str], min_concepts: int = 3, source: str | Path | None = None
) -> None:
    """Raise one DataError that lists every problem; return quietly when the bank is usable."""
    problems = concept_bank_problems(bank, labels, min_concepts)
    if problems:
        raise DataError(
            "; ".join(problems) + " (fix the concept file or regenerate it)",
            file=str(source) if source is not None else None,
        )
