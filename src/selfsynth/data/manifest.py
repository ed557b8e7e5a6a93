"""Manifest formats: ``root/{train,test}.jsonl`` or ``.csv`` listing image, label and optional id.

A manifest row has an image path relative to the root (key ``image``, ``img_path`` or ``path``),
a ``label``, and optionally ``id`` and ``split``; every other key or column is kept in
``Example.meta``. Splits: ``train`` reads ``train.<ext>`` plus ``val.<ext>`` if present (validation
data is merged into train); ``test`` reads ``test.<ext>``. Without per-split files, one
``manifest.<ext>`` (or ``--root`` pointing at any manifest file) with a ``split`` column is read
and filtered. Without an ``id`` the image path is the id.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, image_file
from selfsynth.errors import DataError
from selfsynth.records import Example

IMAGE_KEYS = ("image", "img_path", "path")
_SPLIT_ALIASES = {"train": "train", "val": "train", "valid": "train", "validation": "train", "test": "test"}


def iter_jsonl_rows(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` for each non-blank line; a malformed line goes to ``problems``."""
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", file=str(path)) from None
    with f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = None
                with problems.item():
                    obj = _parse_json_line(line, path, n)
                if obj is not None:
                    yield n, obj
        except UnicodeDecodeError:
            raise DataError("not UTF-8 text", file=str(path)) from None


def _parse_json_line(line: str, path: Path, n: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(
            f"malformed JSON line ({e.msg} at column {e.colno})", file=str(path), line=n
        ) from None
    if not isinstance(obj, dict):
        raise DataError("each line must be a JSON object", file=str(path), line=n)
    return obj


def iter_csv_rows(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for each data row; a row with the wrong number of columns goes to ``problems``."""
    try:
        f = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", file=str(path)) from None
    with f:
        try:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if not header:
                raise DataError(
                    "empty CSV file (expected a header row such as image,label)", file=str(path), line=1
                )
            for row in reader:
                n = reader.line_num
                if not any((v or "").strip() for k, v in row.items() if k is not None):
                    continue
                extra = len(row.get(None) or [])
                missing = sum(v is None for v in row.values())
                if extra or missing:
                    problems.add(
                        DataError(
                            f"expected {len(header)} columns ({','.join(header)}), "
                            f"got {len(header) + extra - missing}",
                            file=str(path),
                            line=n,
                        )
                    )
                    continue
                yield n, {k.strip(): v for k, v in row.items()}
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", file=str(path)) from None
        except UnicodeDecodeError:
            raise DataError("not UTF-8 text", file=str(path)) from None


def row_to_example(
    row: dict[str, Any],
    *,
    base: Path,
    split: str,
    file: Path,
    line: int,
    image_keys: tuple[str, ...] = IMAGE_KEYS,
) -> Example:
    """One manifest row as an Example; missing fields and bad paths are DataErrors with the line."""
    where = {"file": str(file), "line": line}
    key = next((k for k in image_keys if row.get(k) not in (None, "")), None)
    if key is None:
        raise DataError(f"no image path (expected a non-empty {' or '.join(image_keys)})", **where)
    rel = row[key]
    if not isinstance(rel, str):
        raise DataError(f"{key} must be a string path, got {rel!r}", **where)
    label = row.get("label")
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        raise DataError("missing or empty 'label'", **where)
    rid = row.get("id")
    if rid in (None, ""):
        rid = rel.replace("\\", "/")
    elif not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise DataError(f"id must be a string or an integer, got {rid!r}", **where)
    path = image_file(base, rel, **where)
    meta = {k: v for k, v in row.items() if k not in ("id", "label", "split", key)}
    return Example(id=str(rid), image=str(path), label=label.strip(), split=split, meta=meta)


def _row_split(row: dict[str, Any], file: Path, line: int) -> str | None:
    value = row.get("split")
    if value in (None, ""):
        return None
    mapped = _SPLIT_ALIASES.get(str(value).strip().lower())
    if mapped is None:
        raise DataError(f"unknown split {value!r} (use train, val or test)", file=str(file), line=line)
    return mapped


def _load(cfg: DataConfig, split: str, problems: Problems, ext: str) -> list[Example]:
    root = Path(cfg.root)
    iter_rows = iter_jsonl_rows if ext == "jsonl" else iter_csv_rows
    if root.is_file():
        base, files, filtered = root.parent, [root], True
    else:
        names = ["train", "val", "valid"] if split == "train" else ["test"]
        files = [root / f"{n}.{ext}" for n in names if (root / f"{n}.{ext}").is_file()]
        base, filtered = root, False
        if not files:
            single = root / f"manifest.{ext}"
            if not single.is_file():
                raise DataError(f"no {split}.{ext} (or manifest.{ext} with a split column) in {root}")
            files, filtered = [single], True
    out: list[Example] = []
    for file in files:
        for n, row in iter_rows(file, problems):
            with problems.item():
                row_split = _row_split(row, file, n)
                if filtered:
                    if row_split is None:
                        raise DataError("missing 'split' (train, val or test)", file=str(file), line=n)
                    if row_split != split:
                        continue
                elif row_split is not None and row_split != split:
                    raise DataError(
                        f"split {row.get('split')!r} disagrees with the file it is in", file=str(file), line=n
                    )
                out.append(row_to_example(row, base=base, split=split, file=file, line=n))
    return out


def load_jsonl(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    return _load(cfg, split, problems, "jsonl")


def load_csv(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    return _load(cfg, split, problems, "csv")
