"""CUB-200-2011 birds, read from the dataset's own index files.

Layout (``--root`` is ``CUB_200_2011/`` or the folder that contains it)::

    images.txt              <image_id> <path under images/>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <1 = train, 0 = test>
    classes.txt             <class_id> 001.Black_footed_Albatross
    images/001.Black_footed_Albatross/*.jpg

Labels are made readable: the ``001.`` prefix is dropped and underscores become spaces
("Black footed Albatross"), because the model is asked to name the class in words. Example ids
are the CUB image ids; ``meta`` holds the class id.
"""

from __future__ import annotations

import re
from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, image_file, require_file
from selfsynth.data.textfiles import read_keyed_lines
from selfsynth.errors import DataError
from selfsynth.records import Example


def readable_label(name: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    name = re.sub(r"^\d+\.", "", name.strip())
    return " ".join(name.replace("_", " ").split())


def find_root(root: Path) -> Path:
    for cand in (root, root / "CUB_200_2011"):
        if (cand / "images.txt").is_file():
            return cand
    raise DataError(f"no images.txt in {root} or {root / 'CUB_200_2011'}: point --root at CUB_200_2011/")


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = find_root(Path(cfg.root))
    hint = "part of the official CUB_200_2011 archive"
    files = {
        name: require_file(root / name, hint)
        for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    }
    classes = read_keyed_lines(files["classes.txt"], problems, columns="<class_id> <name>")
    labels = read_keyed_lines(
        files["image_class_labels.txt"], problems, int_value=True, columns="<image_id> <class_id>"
    )
    flags = read_keyed_lines(
        files["train_test_split.txt"], problems, int_value=True, columns="<image_id> <is_training_image>"
    )
    images = read_keyed_lines(files["images.txt"], problems, columns="<image_id> <path>")
    want = "1" if split == "train" else "0"
    out: list[Example] = []
    for image_id, (rel, n) in sorted(images.items(), key=lambda kv: int(kv[0])):
        with problems.item():
            where = {"file": str(files["images.txt"]), "line": n}
            if image_id not in flags:
                raise DataError(f"image {image_id} has no line in train_test_split.txt", **where)
            flag = flags[image_id][0]
            if flag not in ("0", "1"):
                raise DataError(
                    f"is_training_image must be 0 or 1, got {flag}",
                    file=str(files["train_test_split.txt"]),
                    line=flags[image_id][1],
                )
            if flag != want:
                continue
            if image_id not in labels:
                raise DataError(f"image {image_id} has no line in image_class_labels.txt", **where)
            class_id, class_line = labels[image_id]
            if class_id not in classes:
                raise DataError(
                    f"unknown class id {class_id} (not in classes.txt)",
                    file=str(files["image_class_labels.txt"]),
                    line=class_line,
                )
            path = image_file(root / "images", rel, **where)
            out.append(
                Example(
                    id=image_id,
                    image=str(path),
                    label=readable_label(classes[class_id][0]),
                    split=split,
                    meta={"class_id": int(class_id)},
                )
            )
    return out
