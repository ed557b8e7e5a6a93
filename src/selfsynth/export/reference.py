"""Write any dataset selfsynth reads as the reference scripts' lists: ``{name}-train.json``, ``{name}-test.json``.

Each list is a JSON array of ``{"id", "img_path", "label"}``, the split and labels exactly as a
run loads them (``data.load_split``). ``img_path`` is relative to an image root, by default the
output folder's parent: the reference layout, where the lists sit in a folder next to the image
folders, and the one the ``finer`` format reads back (``--format finer --root OUT``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.errors import SelfsynthError
from selfsynth.io import write_json

log = logging.getLogger(__name__)
SPLITS = ("train", "test")


def list_paths(out: Path, name: str) -> dict[str, Path]:
    return {split: out / f"{name}-{split}.json" for split in SPLITS}


def _img_path(image: str, root: str, split: str) -> str:
    rel = os.path.relpath(os.path.realpath(image), root)
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise SelfsynthError(
            f"{split} image {image} is not under the image root {root}, which img_path is relative "
            "to; pass --image-root with a folder that holds every image (e.g. the dataset's parent)"
        )
    return Path(rel).as_posix()


def write_reference_lists(
    cfg: DataConfig,
    out: str | Path,
    *,
    name: str,
    image_root: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write both splits of ``cfg``'s dataset into ``out``; returns the number of items per split."""
    from selfsynth.data.loaders import load_split

    out = Path(out)
    root = os.path.realpath(image_root or out.absolute().parent)
    targets = list_paths(out, name)
    there = [str(p) for p in targets.values() if p.exists()]
    if there and not overwrite:
        raise SelfsynthError(f"{', '.join(there)} already exist; pass --overwrite or another --out")
    others = sorted(p.name for p in out.glob("*-train.json") if p != targets["train"])
    if others:
        log.warning("%s also holds %s: the finer format reads one dataset per folder", out, ", ".join(others))
    lists = {}
    for split in SPLITS:
        report = load_split(cfg, split)
        if report.skipped:
            log.warning("%s: %d bad records skipped (--skip-bad)", split, len(report.skipped))
        lists[split] = [
            {"id": e.id, "img_path": _img_path(e.image, root, split), "label": e.label}
            for e in report.examples
        ]
    for split, items in lists.items():  # both splits are checked before either file is written
        write_json(targets[split], items)
    return {split: len(items) for split, items in lists.items()}
