"""HAM10000 dermoscopy images, read from ``HAM10000_metadata.csv``.

Layout (``--root`` is the folder holding the CSV)::

    HAM10000_metadata.csv        lesion_id,image_id,dx,dx_type,age,sex,localization
    HAM10000_images_part_1/ISIC_0024306.jpg   (and _part_2/; or one images folder; or ROOT itself)

Diagnosis codes become readable labels ("mel" -> "melanoma", ...). There is no official split:
``data.split_file`` (image ids or relative paths) or a seeded split stratified by diagnosis and
grouped by ``lesion_id``, because many lesions were photographed several times and a lesion seen
in training must not be tested on. The CSV's other columns are kept in ``Example.meta``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, is_image, resolve_inside
from selfsynth.data.manifest import iter_csv_rows
from selfsynth.data.splits import apply_split_file, grouped_stratified_split, read_split_file
from selfsynth.errors import DataError
from selfsynth.records import Example

log = logging.getLogger(__name__)

DIAGNOSES = {
    "akiec": "actinic keratoses",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevi",
    "vasc": "vascular lesions",
}
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "images", ".")
REQUIRED = ("lesion_id", "image_id", "dx")


def _image_index(root: Path) -> dict[str, Path]:
    """Image id (file stem) -> file, over the usual image folders; the first folder wins."""
    index: dict[str, Path] = {}
    for name in IMAGE_DIRS:
        folder = root / name
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if is_image(p.name) and p.is_file():
                    index.setdefault(p.stem, p)
    return index


def _all_examples(root: Path, split: str, problems: Problems) -> list[Example]:
    csv_path = root / "HAM10000_metadata.csv"
    if not csv_path.is_file():
        raise DataError(f"no HAM10000_metadata.csv in {root}: point --root at the folder that holds it")
    index = _image_index(root)
    out: list[Example] = []
    for i, (n, row) in enumerate(iter_csv_rows(csv_path, problems)):
        if i == 0:
            missing = [c for c in REQUIRED if c not in row]
            if missing:
                raise DataError(
                    f"missing column(s) {', '.join(missing)} (expected {','.join(REQUIRED)},...)",
                    file=str(csv_path),
                    line=1,
                )
        with problems.item():
            where = {"file": str(csv_path), "line": n}
            lesion, image_id, dx = (row[c].strip() for c in REQUIRED)
            if not image_id or not lesion:
                raise DataError("empty image_id or lesion_id", **where)
            if dx not in DIAGNOSES:
                raise DataError(f"unknown diagnosis {dx!r} (expected one of {', '.join(DIAGNOSES)})", **where)
            found = index.get(image_id)
            if found is None:
                raise DataError(
                    f"image not found: {image_id}.jpg (looked in {', '.join(IMAGE_DIRS[:3])} and {root})",
                    **where,
                )
            path = resolve_inside(root, found.relative_to(root).as_posix(), **where)
            meta = {k: v for k, v in row.items() if k != "image_id"}
            out.append(Example(id=image_id, image=str(path), label=DIAGNOSES[dx], split=split, meta=meta))
    return out


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = Path(cfg.root)
    everything = _all_examples(root, split, problems)
    if cfg.split_file:
        chosen = apply_split_file(everything, cfg.split_file, split, _names)
        _warn_shared_lesions(everything, cfg.split_file)
        return chosen
    parts = grouped_stratified_split(
        everything,
        label=lambda e: e.label,
        group=lambda e: e.meta["lesion_id"],
        key=lambda e: e.id,
        fraction=cfg.test_fraction,
        seed=cfg.split_seed,
    )
    return parts[split]


def _names(ex: Example) -> tuple[str, ...]:
    rel = Path(ex.image).name
    return (ex.id, rel)


def _warn_shared_lesions(examples: list[Example], split_file: str) -> None:
    wanted = read_split_file(split_file)
    sides: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        for side in ("train", "test"):
            if ex.id in wanted[side] or Path(ex.image).name in wanted[side]:
                sides[ex.meta["lesion_id"]].add(side)
    shared = sorted(lesion for lesion, s in sides.items() if len(s) == 2)
    if shared:
        log.warning(
            "%s: %d lesions have images in both train and test (e.g. %s); test accuracy will be optimistic",
            split_file,
            len(shared),
            shared[0],
        )
