"""Finer-style JSON lists: ``ROOT/<name>-train.json`` and ``ROOT/<name>-test.json``.

Each file is a JSON list of ``{"id", "img_path", "label"}``. In the reference layout the lists sit
in a folder next to the image folders and ``img_path`` is relative to ROOT's parent
(``data/cub-train.json`` with ``img_path: "CUB_200_2011/images/..."``), so ``img_path`` is resolved
against ROOT's parent first and against ROOT itself when that file does not exist. Either way
the image must stay inside the folder it was resolved against. ``<name>-val.json``, if present,
is merged into train. Extra keys of an item are kept in ``Example.meta``.
"""

from __future__ import annotations

from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, resolve_inside
from selfsynth.errors import DataError
from selfsynth.io import read_json
from selfsynth.records import Example


def _list_file(root: Path, split: str) -> Path | None:
    found = sorted(root.glob(f"*-{split}.json"))
    if len(found) > 1:
        raise DataError(
            f"several *-{split}.json files in {root} ({', '.join(p.name for p in found)}): "
            "keep one dataset per folder"
        )
    return found[0] if found else None


def image_roots(root: Path) -> list[Path]:
    """The folders ``img_path`` is resolved against, in order: ROOT's parent, then ROOT."""
    return [root.parent, root]


def _image(root: Path, rel: str, file: Path, where: str) -> Path:
    tried: list[Path] = []
    escape: DataError | None = None
    for base in image_roots(root):
        try:
            path = resolve_inside(base, rel, file=str(file), what=f"{where}: img_path")
        except DataError as e:
            escape = escape or e
            continue
        if path.is_file():
            return path
        tried.append(path)
    if escape is not None and not tried:
        raise escape
    raise DataError(f"{where}: image not found (looked for {' and '.join(map(str, tried))})", file=str(file))


def _item(obj: object, i: int, root: Path, split: str, file: Path) -> Example:
    where = f"item {i}"
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with id, img_path and label", file=str(file))
    for key in ("id", "img_path", "label"):
        if obj.get(key) in (None, ""):
            raise DataError(f"{where}: missing {key!r}", file=str(file))
    rid, rel, label = obj["id"], obj["img_path"], obj["label"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise DataError(f"{where}: id must be a string or an integer, got {rid!r}", file=str(file))
    if not isinstance(rel, str) or not isinstance(label, str):
        raise DataError(f"{where}: img_path and label must be strings", file=str(file))
    path = _image(root, rel, file, f"{where} (id {rid!r})")
    meta = {k: v for k, v in obj.items() if k not in ("id", "img_path", "label")}
    return Example(id=str(rid), image=str(path), label=label.strip(), split=split, meta=meta)


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (finer expects the folder holding <name>-{split}.json)")
    files = [_list_file(root, split)] + ([_list_file(root, "val")] if split == "train" else [])
    files = [f for f in files if f is not None]
    if not files:
        raise DataError(f"no <name>-{split}.json in {root} (finer format: JSON lists of id, img_path, label)")
    out: list[Example] = []
    for file in files:
        items = read_json(file)
        if not isinstance(items, list):
            raise DataError("expected a JSON list of {id, img_path, label} objects", file=str(file))
        for i, obj in enumerate(items):
            with problems.item():
                out.append(_item(obj, i, root, split, file))
    return out
