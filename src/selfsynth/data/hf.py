"""Hugging Face ``datasets`` on disk (``data.format=hf``): a ``save_to_disk`` folder or parquet files.

ROOT is one of:
- a folder written by ``DatasetDict.save_to_disk`` (``dataset_dict.json``, one folder per split);
- a folder written by ``Dataset.save_to_disk`` (``state.json``): one split holding everything;
- a folder of parquet files, or one parquet file. A file's split is its name up to the first "-"
  (``train.parquet``, ``data/train-00000-of-00002.parquet``), or its folder's name when the file
  name is a number (``default/test/0000.parquet``).

Each row is one example: the image in ``data.image_column`` (an ``Image`` feature, raw bytes or a
path) and the class in ``data.label_column`` (a ``ClassLabel``, whose names become the labels,
or strings). Ids are ``<split>/<row>``.

Which of the dataset's splits make up selfsynth's train and test: ``data.train_splits`` and
``data.test_splits``, or by default test = ``test`` (or, without one, the first of
``validation``/``val``/``valid``) and train = ``train`` plus any validation split not used as
test. A dataset with a single split is split per class (``data.test_fraction``, ``data.split_seed``).

Image bytes are written once to the content-addressed store of :mod:`selfsynth.data.image_store`
after a full decode check, so records point at image files as every other format's do. An image
stored as a path must lie inside ROOT (a relative path is resolved against it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, resolve_inside
from selfsynth.data.image_store import store_image, store_root
from selfsynth.data.splits import stratified_split
from selfsynth.errors import ConfigError, DataError, SelfsynthError
from selfsynth.records import Example

log = logging.getLogger(__name__)

VALIDATION = ("validation", "val", "valid")
INSTALL = "pip install 'selfsynth[hf]'"
ROW_FIX = "fix or drop the row (e.g. with Dataset.filter), or set data.skip_bad=true to leave bad rows out"
_BATCH = 64  # rows per read: bounds the image bytes held in memory at once
# What pyarrow and datasets raise on a malformed file (Arrow's errors subclass these).
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, NotImplementedError)


@dataclass
class _Table:
    """Rows of one split: a folder written by ``Dataset.save_to_disk``, or one parquet file."""

    source: str  # the folder or file, as errors name it
    features: dict[str, Any]  # column -> datasets feature (Image, ClassLabel, Value, ...)
    rows: int
    batches: Callable[[list[str]], Iterator[Any]]  # those columns, a pyarrow table or batch at a time


def image_roots(root: Path) -> list[Path]:
    """Where this format's images lie: files the dataset points at inside ROOT, and the image store."""
    return [root if root.is_dir() else root.parent, store_root()]


def load(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    if cfg.image_column == cfg.label_column:
        raise ConfigError(f"data.image_column and data.label_column are both {cfg.image_column!r}")
    root = Path(cfg.root)
    base = root if root.is_dir() else root.parent
    splits = find_splits(root)
    train, test = choose_splits(list(splits), cfg, root)
    if test:
        names = train if split == "train" else test
        return [ex for name in names for ex in _read_split(name, splits[name], cfg, base, split, problems)]
    pool = [ex for name in train for ex in _read_split(name, splits[name], cfg, base, split, problems)]
    parts = stratified_split(
        pool, label=lambda e: e.label, key=lambda e: e.id, fraction=cfg.test_fraction, seed=cfg.split_seed
    )
    return parts[split]


def choose_splits(available: list[str], cfg: DataConfig, root: Path) -> tuple[list[str], list[str]]:
    """(train splits, test splits) of the dataset; no test splits means: split train's rows per class."""
    listed = ", ".join(available)
    for key in ("train_splits", "test_splits"):
        for name in getattr(cfg, key):
            if name not in available:
                raise DataError(
                    f"data.{key} names split {name!r}, but the dataset's splits are: {listed}", file=str(root)
                )
    if set(cfg.train_splits) & set(cfg.test_splits):
        raise ConfigError("a split cannot be in both data.train_splits and data.test_splits")
    if len(available) == 1 and not (cfg.train_splits or cfg.test_splits):
        return available, []
    test = list(cfg.test_splits) or (["test"] if "test" in available else [])
    test = test or [v for v in VALIDATION if v in available][:1]
    train = list(cfg.train_splits) or [n for n in ("train", *VALIDATION) if n in available and n not in test]
    if not train:
        raise DataError(
            f"no train split in {root} (its splits are: {listed}); "
            "name the ones to use with data.train_splits=... and data.test_splits=..."
        )
    unused = [n for n in available if n not in train + test]
    if unused:
        log.info(
            "%s: splits %s are not used (train: %s, test: %s)", root, unused, train, test or "split of train"
        )
    return train, test


def find_splits(root: Path) -> dict[str, list[_Table]]:
    """The dataset's splits under ``root``, each as the tables that hold its rows, in row order."""
    if root.is_file():
        if root.suffix != ".parquet":
            raise DataError("expected a parquet file, or a folder written by save_to_disk", file=str(root))
        return {_file_split(root, root.parent): [_parquet(root)]}
    if (root / "dataset_dict.json").is_file():
        index = root / "dataset_dict.json"
        names = _read_json(index).get("splits")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise DataError('expected {"splits": ["train", ...]}', file=str(index))
        return {n: [_saved(resolve_inside(root, n, file=str(index), what="split folder"))] for n in names}
    if (root / "state.json").is_file():
        return {"data": [_saved(root)]}
    out: dict[str, list[_Table]] = {}
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        real = resolve_inside(root, rel.as_posix(), what="parquet file")
        out.setdefault(_file_split(path, root), []).append(_parquet(real))
    if not out:
        raise DataError(
            f"no Hugging Face dataset in {root}: expected dataset_dict.json or state.json "
            "(written by save_to_disk) or *.parquet files"
        )
    return out


def _file_split(path: Path, root: Path) -> str:
    name = path.stem.split("-", 1)[0]
    if (not name or name.isdigit()) and path.parent != root:
        name = path.parent.name
    return name or "data"


def _datasets() -> Any:
    try:
        import datasets
        import pyarrow.parquet  # noqa: F401  (parquet support is a separate pyarrow module)
    except ImportError as e:
        raise SelfsynthError(f"data.format=hf needs the datasets package ({e}): {INSTALL}") from None
    return datasets


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"not a readable JSON file ({e})", file=str(path)) from None
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object", file=str(path))
    return obj


def _saved(folder: Path) -> _Table:
    """A folder written by ``Dataset.save_to_disk``; its data file names must stay inside it."""
    datasets = _datasets()
    state = folder / "state.json"
    files = _read_json(state).get("_data_files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise DataError('expected "_data_files": [{"filename": ...}, ...]', file=str(state))
    for f in files:
        resolve_inside(folder, f.get("filename"), file=str(state), what="data file")
    try:
        ds = datasets.Dataset.load_from_disk(str(folder))
    except _READ_ERRORS as e:
        raise DataError(f"not a readable saved dataset ({e})", file=str(folder)) from None
    return _Table(
        source=str(folder),
        features=dict(ds.features),
        rows=len(ds),
        batches=lambda cols: ds.select_columns(cols).with_format("arrow").iter(batch_size=_BATCH),
    )


def _parquet(path: Path) -> _Table:
    datasets = _datasets()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        # Reads the features that datasets writes into the schema (ClassLabel names, Image).
        features = datasets.Features.from_arrow_schema(pf.schema_arrow)
    except _READ_ERRORS as e:
        raise DataError(f"not a readable parquet file ({e})", file=str(path)) from None
    return _Table(
        source=str(path),
        features=dict(features),
        rows=pf.metadata.num_rows,
        batches=lambda cols: pf.iter_batches(batch_size=_BATCH, columns=cols),
    )


def _is_image(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, dict):  # parquet without datasets' metadata: a struct of bytes and path
        return "bytes" in feature or "path" in feature
    return isinstance(feature, datasets.Value) and feature.dtype in (
        "binary",
        "large_binary",
        "string",
        "large_string",
    )


def _check_columns(table: _Table, cfg: DataConfig) -> list[str] | None:
    """The label column's class names (None for string labels), once both columns are usable."""
    import datasets

    for what, col in (("image", cfg.image_column), ("label", cfg.label_column)):
        if col not in table.features:
            images = [c for c, f in table.features.items() if _is_image(f)]
            hint = f" (image columns: {', '.join(images)})" if what == "image" and images else ""
            raise DataError(
                f"no column {col!r} (data.{what}_column); the columns are: {', '.join(table.features)}{hint}",
                file=table.source,
            )
    image = table.features[cfg.image_column]
    if not _is_image(image):
        raise DataError(
            f"column {cfg.image_column!r} holds {image}, not images (an Image feature, bytes or paths); "
            "set data.image_column",
            file=table.source,
        )
    label = table.features[cfg.label_column]
    if isinstance(label, datasets.ClassLabel):
        return list(label.names)
    if isinstance(label, datasets.Value) and label.dtype in ("string", "large_string"):
        return None
    if isinstance(label, datasets.Value) and "int" in label.dtype:
        raise DataError(
            f"column {cfg.label_column!r} holds integers without class names: make it a ClassLabel "
            f"(ds.cast_column({cfg.label_column!r}, ClassLabel(names=[...]))) or store the names as strings",
            file=table.source,
        )
    raise DataError(
        f"column {cfg.label_column!r} holds {label}, expected a ClassLabel or strings; set data.label_column",
        file=table.source,
    )


def _read_split(
    name: str, tables: list[_Table], cfg: DataConfig, base: Path, split: str, problems: Problems
) -> list[Example]:
    out: list[Example] = []
    n = 0  # row number across the split's files: the id
    total = sum(t.rows for t in tables)
    bar = tqdm(total=total, desc=f"reading {name}", unit="row", leave=False, disable=total < 1000)
    for table in tables:
        names = _check_columns(table, cfg)
        row = 0  # row number inside this file: what errors name
        for images, labels in _columns(table, [cfg.image_column, cfg.label_column]):
            for image, label in zip(images, labels, strict=True):
                with problems.item():
                    lab = _label(label, names, cfg.label_column, table.source, row)
                    path = _image(image, cfg.image_column, table.source, row, base)
                    out.append(Example(f"{name}/{n}", str(path), lab, split, {"hf_split": name, "row": n}))
                row += 1
                n += 1
            bar.update(len(images))
    bar.close()
    return out


def _columns(table: _Table, cols: list[str]) -> Iterator[tuple[list[Any], list[Any]]]:
    """The two columns' values as Python lists, a batch at a time; a corrupt file is a DataError."""
    batches = table.batches(cols)
    while True:
        try:
            batch = next(batches, None)
        except _READ_ERRORS as e:
            raise DataError(f"cannot read the rows ({e})", file=table.source) from None
        if batch is None:
            return
        yield batch.column(cols[0]).to_pylist(), batch.column(cols[1]).to_pylist()


def _label(value: Any, names: list[str] | None, col: str, source: str, row: int) -> str:
    if value is None:
        raise DataError(f"row {row}: no label in column {col!r}; {ROW_FIX}", file=source)
    if names is not None:
        if isinstance(value, int) and 0 <= value < len(names):
            return names[value]
        unlabelled = (
            " (-1 marks a row without a label: pick labelled splits with data.train_splits / data.test_splits)"
            if value == -1
            else ""
        )
        raise DataError(
            f"row {row}: label {value!r} in column {col!r} is not one of its {len(names)} classes "
            f"(0..{len(names) - 1}){unlabelled}; {ROW_FIX}",
            file=source,
        )
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"row {row}: empty label in column {col!r}; {ROW_FIX}", file=source)
    return value.strip()


def _image(value: Any, col: str, source: str, row: int, base: Path) -> Path:
    """The file holding the row's image: its bytes in the image store, or the file it points at."""
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
    if isinstance(data, str):
        data, path = None, data
    if data is not None:
        return store_image(bytes(data), file=source, context=f"(row {row}, column {col!r})", fix=ROW_FIX)
    if path is None:
        raise DataError(f"row {row}: no image in column {col!r}; {ROW_FIX}", file=source)
    # Without bytes the row names a file: like any loader's image path, it must stay inside the root.
    real = resolve_inside(base, path, file=source, what=f"row {row}, column {col!r}: image path")
    if not real.is_file():
        raise DataError(f"row {row}, column {col!r}: image not found: {real}", file=source)
    return real
