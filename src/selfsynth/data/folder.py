"""Class-per-folder image trees: ``imagefolder``, ``pld`` (PlantVillage) and ``chest_xray``.

``imagefolder`` and ``pld`` read ``ROOT/<class>/*.{jpg,jpeg,png,bmp,webp}``. When ``ROOT/train/``
and ``ROOT/test/`` exist they are the splits (``val/`` or ``valid/`` is merged into train);
otherwise ``data.split_file`` (JSON ``{"train": [...], "test": [...]}`` of relative paths, ids or
unique file names) or a seeded stratified split (``data.test_fraction``, ``data.split_seed``)
decides. Ids are paths relative to ROOT. ``imagefolder`` keeps folder names as labels;
``pld`` makes PlantVillage names readable ("Corn_(maize)___healthy" -> "Corn (maize) healthy").

``chest_xray`` reads the Kaggle pneumonia set, ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/``;
labels are the folder names in lower case ("normal", "pneumonia"), val is merged into train, and
``meta["pathogen"]`` records "bacteria" or "virus" when the file name says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems, class_dirs, is_image, list_images, resolve_inside
from selfsynth.data.splits import apply_split_file, stratified_split
from selfsynth.errors import DataError
from selfsynth.records import Example

log = logging.getLogger(__name__)

TRAIN_DIRS = ("train", "val", "valid")


def readable_plant(folder: str) -> str:
    """``"Tomato___Early_blight"`` -> ``"Tomato Early blight"``."""
    return " ".join(folder.replace("_", " ").split())


def scan_classes(
    folder: Path, base: Path, split: str, problems: Problems, label: Callable[[str], str] = str
) -> list[Example]:
    """One example per image in each class sub-folder of ``folder``; ids are paths relative to ``base``."""
    out: list[Example] = []
    stray = [p.name for p in folder.iterdir() if p.is_file() and is_image(p.name)]
    if stray:
        log.warning(
            "%s: %d images outside any class folder are ignored (e.g. %s)", folder, len(stray), stray[0]
        )
    for cls in class_dirs(folder):
        cls_rel = cls.relative_to(base).as_posix()
        cls_real = None
        with problems.item():
            cls_real = resolve_inside(base, cls_rel, what="class folder")
        if cls_real is None:
            continue  # the class folder itself leads out of the root (skipped and reported)
        files = list_images(cls)
        if not files:
            log.warning("%s: class folder holds no images", cls)
        for f in files:
            rel = f"{cls_rel}/{f.name}"
            with problems.item():
                # Only a symlinked file can leave a class folder that is itself inside the root.
                path = resolve_inside(base, rel) if f.is_symlink() else cls_real / f.name
                out.append(
                    Example(
                        id=rel, image=str(path), label=label(cls.name), split=split, meta={"folder": cls.name}
                    )
                )
    return out


def _names(ex: Example) -> tuple[str, ...]:
    name = ex.id.rsplit("/", 1)[-1]
    return (ex.id, name, name.rsplit(".", 1)[0])


def _load_tree(cfg: DataConfig, split: str, problems: Problems, label: Callable[[str], str]) -> list[Example]:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected one sub-folder of images per class)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        if cfg.split_file:
            log.warning("%s has train/ and test/ folders; data.split_file is ignored", root)
        dirs = [d for d in TRAIN_DIRS if (root / d).is_dir()] if split == "train" else ["test"]
        out: list[Example] = []
        for d in dirs:
            out += scan_classes(root / d, root, split, problems, label)
        return out
    everything = scan_classes(root, root, split, problems, label)
    if not everything:
        raise DataError(f"no class folders with images in {root} (expected {root}/<class>/*.jpg)")
    if cfg.split_file:
        return apply_split_file(everything, cfg.split_file, split, _names)
    parts = stratified_split(
        everything,
        label=lambda e: e.label,
        key=lambda e: e.id,
        fraction=cfg.test_fraction,
        seed=cfg.split_seed,
    )
    return parts[split]


def load_imagefolder(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    return _load_tree(cfg, split, problems, str)


def load_pld(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    return _load_tree(cfg, split, problems, readable_plant)


def _xray_root(root: Path) -> Path:
    for cand in (root, root / "chest_xray", root / "chest_xray" / "chest_xray"):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise DataError(
        f"no train/ and test/ folders in {root} or {root / 'chest_xray'}: point --root at chest_xray/"
    )


def load_chest_xray(cfg: DataConfig, split: str, problems: Problems) -> list[Example]:
    root = _xray_root(Path(cfg.root))
    dirs = [d for d in TRAIN_DIRS if (root / d).is_dir()] if split == "train" else ["test"]
    out: list[Example] = []
    for d in dirs:
        for ex in scan_classes(root / d, root, split, problems, str.lower):
            ex.meta["source_split"] = d
            name = ex.id.rsplit("/", 1)[-1].lower()
            for pathogen in ("bacteria", "virus"):
                if pathogen in name:
                    ex.meta["pathogen"] = pathogen
            out.append(ex)
    return out
