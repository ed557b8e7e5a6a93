"""Stanford Dogs, read from the dataset's own MATLAB split lists.

Layout (``--root`` is the folder holding both; the lists may also sit in ``lists/``)::

    Images/n02085620-Chihuahua/n02085620_5927.jpg
    train_list.mat   file_list: cell array of 'n02085620-Chihuahua/n02085620_5927.jpg'
    test_list.mat    labels: 1-based class numbers, one per file

The breed comes from the image's folder and is made readable ("n02085782-Japanese_spaniel" ->
"Japanese spaniel"); the ``labels`` array is checked against it (one folder per class number,
numbers within the number of breed folders) rather than trusted blindly. Ids are file stems
("n02085620_5927"); ``meta`` holds the WordNet id and the class number.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, class_dirs, image_file
from selfsynth.errors import DataError
from selfsynth.records import Example


def readable_breed(folder: str) -> str:
    """``"n02085782-Japanese_spaniel"`` -> ``"Japanese spaniel"``."""
    name = re.sub(r"^n\d+-", "", folder.strip())
    return " ".join(name.replace("_", " ").split())


def _strings(cell: Any) -> str:
    """The one string inside a MATLAB cell as scipy returns it (nested object/str arrays)."""
    while hasattr(cell, "shape") and getattr(cell, "dtype", None) is not None and cell.dtype.kind == "O":
        if cell.size != 1:
            raise ValueError(f"expected one string per cell, got {cell.size} values")
        cell = cell.reshape(-1)[0]
    if hasattr(cell, "dtype") and cell.dtype.kind == "U":
        if cell.size != 1:
            raise ValueError(f"expected one string per cell, got {cell.size} values")
        return str(cell.reshape(-1)[0])
    if isinstance(cell, str):
        return cell
    raise ValueError(f"expected a string, got {type(cell).__name__}")


def read_list(path: Path) -> list[tuple[str, Any]]:
    """``(relative path, raw label)`` pairs from a Stanford Dogs ``*_list.mat``."""
    import numpy as np
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError or MatReadError on bad files
        raise DataError(
            f"not a readable MATLAB file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            file=str(path),
        ) from None
    keys = [k for k in mat if not k.startswith("__")]
    for key in ("file_list", "labels"):
        if key not in mat:
            raise DataError(f"no {key!r} variable (found: {', '.join(keys) or 'none'})", file=str(path))
    files = np.asarray(mat["file_list"], dtype=object).reshape(-1)
    labels = np.asarray(mat["labels"]).reshape(-1)
    if len(files) != len(labels):
        raise DataError(f"file_list has {len(files)} entries but labels has {len(labels)}", file=str(path))
    out = []
    for i, (cell, label) in enumerate(zip(files, labels, strict=True)):
        try:
            rel = _strings(cell)
        except ValueError as e:
            raise DataError(f"file_list entry {i + 1}: {e}", file=str(path)) from None
        out.append((rel, label))
    return out


def _find(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise DataError(f"no {what} in {root} (looked for {', '.join(names)})")


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = Path(cfg.root)
    images = _find(root, ("Images", "images"), "Images/ folder")
    lst = _find(root, (f"{split}_list.mat", f"lists/{split}_list.mat"), f"{split}_list.mat")
    n_classes = len(class_dirs(images))
    folder_of: dict[int, str] = {}
    out: list[Example] = []
    for i, (rel, raw) in enumerate(read_list(lst), 1):
        with problems.item():
            where = f"entry {i} ({rel!r})"
            try:
                number = int(raw)
                if number != raw:
                    raise ValueError
            except (TypeError, ValueError):
                raise DataError(f"{where}: label {raw!r} is not an integer", file=str(lst)) from None
            if not 1 <= number <= n_classes:
                raise DataError(
                    f"{where}: unknown label {number} (there are {n_classes} breed folders in {images})",
                    file=str(lst),
                )
            parts = rel.replace("\\", "/").split("/")
            if len(parts) != 2:
                raise DataError(f"{where}: expected '<wnid>-<breed>/<file>.jpg'", file=str(lst))
            folder = parts[0]
            if folder_of.setdefault(number, folder) != folder:
                raise DataError(
                    f"{where}: label {number} is used for both {folder_of[number]} and {folder}",
                    file=str(lst),
                )
            path = image_file(images, rel, file=str(lst))
            out.append(
                Example(
                    id=Path(parts[1]).stem,
                    image=str(path),
                    label=readable_breed(folder),
                    split=split,
                    meta={"wnid": folder.split("-", 1)[0], "class_number": number},
                )
            )
    return out
