"""FGVC-Aircraft 2013b, read from the dataset's own split files.

Layout (``--root`` is ``fgvc-aircraft-2013b/``, its ``data/`` folder, or the folder above)::

    data/images/<id>.jpg
    data/images_<level>_<split>.txt   "<id> <label with spaces>", level = variant | family | manufacturer,
                                      split = train | val | trainval | test
    data/variants.txt, families.txt, manufacturers.txt   the class names, one per line

``data.label_level`` picks the level (default variant, the 100-class task). The training split is
``trainval`` (``train`` + ``val`` when no trainval file exists); the test split is ``test``.

The real images carry a 20-pixel copyright banner along the bottom edge that names the
photographer, so a model could learn the banner instead of the aircraft; every example records
``meta["crop_bottom"] = 20`` and image code should crop that many rows before use.
"""

from __future__ import annotations

from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, image_file
from selfsynth.data.textfiles import read_keyed_lines
from selfsynth.errors import ConfigError, DataError
from selfsynth.records import Example

LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
CROP_BOTTOM = 20


def find_data_dir(root: Path) -> Path:
    for cand in (root / "data", root, root / "fgvc-aircraft-2013b" / "data"):
        if (cand / "images").is_dir() and any(cand.glob("images_*_*.txt")):
            return cand
    raise DataError(
        f"no data/images/ with images_<level>_<split>.txt files under {root}: "
        "point --root at fgvc-aircraft-2013b/"
    )


def _split_files(data: Path, level: str, split: str) -> list[Path]:
    if split == "test":
        names = ["test"]
    elif (data / f"images_{level}_trainval.txt").is_file():
        names = ["trainval"]
    else:
        names = ["train", "val"]
    files = [data / f"images_{level}_{n}.txt" for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"missing {', '.join(missing)} in {data} (needed for the {split} split at label level {level})"
        )
    return files


def _class_names(data: Path, level: str) -> set[str] | None:
    path = data / LEVELS[level]
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    level = cfg.label_level
    if level not in LEVELS:
        raise ConfigError(f"data.label_level={level!r} is not one of {', '.join(LEVELS)}")
    data = find_data_dir(Path(cfg.root))
    known = _class_names(data, level)
    out: list[Example] = []
    for file in _split_files(data, level, split):
        rows = read_keyed_lines(file, problems, rest=True, columns="<image id> <label>")
        for image_id, (label, n) in rows.items():
            with problems.item():
                if known is not None and label not in known:
                    raise DataError(
                        f"unknown label {label!r} (not in {LEVELS[level]})", file=str(file), line=n
                    )
                path = image_file(data / "images", f"{image_id}.jpg", file=str(file), line=n)
                out.append(
                    Example(
                        id=image_id,
                        image=str(path),
                        label=label,
                        split=split,
                        meta={"crop_bottom": CROP_BOTTOM, "label_level": level},
                    )
                )
    return out
