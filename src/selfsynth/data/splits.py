"""Train/test splits for sources without an official one, and per-class caps.

Everything here is a pure function of the item ids and a seed: the same folder gives the same
split on every machine and every run, which resume and comparisons between methods depend on.
Random generators are seeded from strings (``random.Random(str)`` hashes them with SHA-512),
so the result does not depend on PYTHONHASHSEED or on the order the file system lists files.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

from selfsynth.errors import DataError
from selfsynth.io import read_json

log = logging.getLogger(__name__)

T = TypeVar("T")
SPLITS = ("train", "test")  # the sides of a dataset's own split (official or a split file)
VALIDATION = "validation"  # a format's own validation split, or carved from train (validation_per_class)


def check_split(split: str) -> str:
    if split not in (*SPLITS, VALIDATION):
        hint = " (did you mean 'validation'?)" if split in ("val", "valid", "dev") else ""
        raise DataError(f"unknown split {split!r}: use 'train', 'validation' or 'test'{hint}")
    return split


def _shuffled_classes(
    items: Sequence[T], label: Callable[[T], str], key: Callable[[T], str], seed_prefix: str
) -> dict[str, list[T]]:
    """Each class's items in a seeded order (sorted by key first, so input order does not matter)."""
    by_class: dict[str, list[T]] = defaultdict(list)
    for it in items:
        by_class[label(it)].append(it)
    out: dict[str, list[T]] = {}
    for name in sorted(by_class):
        group = sorted(by_class[name], key=key)
        random.Random(f"{seed_prefix}{name}").shuffle(group)
        out[name] = group
    return out


def carve_validation(
    items: Sequence[T], per_class: int, *, label: Callable[[T], str], key: Callable[[T], str], seed: int
) -> tuple[list[T], list[T]]:
    """``(rest, validation)``: a seeded ``per_class`` items of each class held out of training.

    A class keeps at least one training item, so a class with ``per_class`` items or fewer
    gives all but one.
    """
    held: set[str] = set()
    for group in _shuffled_classes(items, label, key, f"{seed}/validation/").values():
        held.update(key(it) for it in group[: min(per_class, len(group) - 1)])
    return [it for it in items if key(it) not in held], [it for it in items if key(it) in held]


def _test_count(n: int, fraction: float) -> int:
    """How many of ``n`` go to test: at least one each side when there are two or more."""
    if n < 2 or fraction <= 0:
        return 0
    return min(max(round(n * fraction), 1), n - 1)


def stratified_split(
    items: Sequence[T], *, label: Callable[[T], str], key: Callable[[T], str], fraction: float, seed: int
) -> dict[str, list[T]]:
    """Seeded split per class; each class keeps ``fraction`` of its items for test."""
    _check_fraction(fraction)
    test_keys: set[str] = set()
    for group in _shuffled_classes(items, label, key, f"{seed}/").values():
        test_keys.update(key(it) for it in group[: _test_count(len(group), fraction)])
    return {
        "train": [it for it in items if key(it) not in test_keys],
        "test": [it for it in items if key(it) in test_keys],
    }


def grouped_stratified_split(
    items: Sequence[T],
    *,
    label: Callable[[T], str],
    group: Callable[[T], Hashable],
    key: Callable[[T], str],
    fraction: float,
    seed: int,
) -> dict[str, list[T]]:
    """Seeded stratified split that keeps every group (e.g. one skin lesion) on one side.

    Groups of a class are shuffled and moved to test until the class's test share reaches
    ``fraction`` of its images; a group's class is the class of its first item (by key).
    """
    _check_fraction(fraction)
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for it in items:
        groups[group(it)].append(it)
    by_class: dict[str, list[tuple[str, list[T]]]] = defaultdict(list)
    for members in groups.values():
        members.sort(key=key)
        by_class[label(members[0])].append((key(members[0]), members))
    test_groups: set[Hashable] = set()
    for name in sorted(by_class):
        entries = sorted(by_class[name], key=lambda e: e[0])
        random.Random(f"{seed}/{name}").shuffle(entries)
        total = sum(len(m) for _, m in entries)
        want = _test_count(total, fraction) if len(entries) > 1 else 0
        taken = 0
        for _, members in entries:
            if taken >= want:
                break
            test_groups.add(group(members[0]))
            taken += len(members)
    return {
        "train": [it for it in items if group(it) not in test_groups],
        "test": [it for it in items if group(it) in test_groups],
    }


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise DataError(f"data.test_fraction must be in [0, 1), got {fraction}")


def read_split_file(path: str | Path) -> dict[str, set[str]]:
    """A user split: JSON ``{"train": [...], "test": [...]}`` of ids or paths relative to the root."""
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise DataError('a split file must be a JSON object {"train": [...], "test": [...]}', file=str(p))
    out: dict[str, set[str]] = {}
    for name in SPLITS:
        entries = data[name]
        if not isinstance(entries, list) or not all(isinstance(e, (str, int)) for e in entries):
            raise DataError(f'"{name}" must be a list of ids or relative paths', file=str(p))
        out[name] = {str(e).replace("\\", "/").removeprefix("./") for e in entries}
    both = out["train"] & out["test"]
    if both:
        sample = ", ".join(sorted(both)[:5])
        raise DataError(f"{len(both)} entries are in both train and test (e.g. {sample})", file=str(p))
    return out


def apply_split_file(
    items: Sequence[T], path: str | Path, split: str, names: Callable[[T], Sequence[str]]
) -> list[T]:
    """Items whose id or relative path is listed under ``split``; unknown entries are errors.

    ``names(item)`` gives every name a user may have written for the item (id, relative path,
    file name). Items listed under neither split are left out, and counted in the log.
    """
    wanted = read_split_file(path)
    index: dict[str, set[int]] = defaultdict(set)
    for i, it in enumerate(items):
        for name in names(it):
            index[name].add(i)
    listed_names = wanted["train"] | wanted["test"]
    unknown = sorted(listed_names - set(index))
    if unknown:
        sample = ", ".join(unknown[:5])
        raise DataError(
            f"{len(unknown)} entries match no image in the dataset (e.g. {sample})", file=str(path)
        )
    ambiguous = sorted(name for name in listed_names if len(index[name]) > 1)
    if ambiguous:
        sample = ", ".join(ambiguous[:5])
        raise DataError(
            f"{len(ambiguous)} entries match several images (e.g. {sample}); "
            "write the path relative to the data root instead",
            file=str(path),
        )
    index = {name: index[name] for name in listed_names}
    sides = {name: {next(iter(index[n])) for n in wanted[name]} for name in SPLITS}
    if sides["train"] & sides["test"]:
        raise DataError(
            f"{len(sides['train'] & sides['test'])} images are listed under both train and test "
            "(by different names)",
            file=str(path),
        )
    chosen = sides[split]
    listed = sides["train"] | sides["test"]
    if len(listed) < len(items):
        log.info("%s: %d images are in neither split and are left out", path, len(items) - len(listed))
    return [it for i, it in enumerate(items) if i in chosen]


def cap_per_class(
    items: Sequence[T], cap: int, *, label: Callable[[T], str], key: Callable[[T], str], seed: int
) -> list[T]:
    """At most ``cap`` items per class (0 = all), a seeded sample kept in the original order."""
    if cap <= 0:
        return list(items)
    by_class: dict[str, list[T]] = defaultdict(list)
    for it in items:
        by_class[label(it)].append(it)
    keep: set[str] = set()
    for name, group in by_class.items():
        group = sorted(group, key=key)
        if len(group) > cap:
            group = random.Random(f"{seed}/cap/{name}").sample(group, cap)
        keep.update(key(it) for it in group)
    return [it for it in items if key(it) in keep]
