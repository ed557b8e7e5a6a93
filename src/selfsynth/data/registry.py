"""The data formats selfsynth reads, by name, with a did-you-mean for a mistyped one.

Each format is a function ``load(cfg, split, problems) -> list[Example]`` in its own module,
imported only when used. Adding a format is one entry here (or :func:`register_format` from
outside the package).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path

from selfsynth.config import DataConfig
from selfsynth.data.checks import Problems
from selfsynth.errors import ConfigError
from selfsynth.records import Example

Loader = Callable[[DataConfig, str, Problems], list[Example]]

# name -> (module, function, one-line description)
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "world": (
        "selfsynth.data.world_files",
        "load",
        "the embedded world: train.jsonl / test.jsonl + concepts.json",
    ),
    "finer": ("selfsynth.data.finer", "load", "Finer-style JSON lists <name>-train.json / <name>-test.json"),
    "cub": ("selfsynth.data.cub", "load", "CUB-200-2011 (images.txt, train_test_split.txt, classes.txt)"),
    "dogs": ("selfsynth.data.dogs", "load", "Stanford Dogs (Images/, train_list.mat, test_list.mat)"),
    "aircraft": ("selfsynth.data.aircraft", "load", "FGVC-Aircraft 2013b (data/images_<level>_<split>.txt)"),
    "pld": ("selfsynth.data.folder", "load_pld", "PlantVillage leaf diseases: one folder per class"),
    "ham10000": ("selfsynth.data.ham10000", "load", "HAM10000 skin lesions (HAM10000_metadata.csv)"),
    "chest_xray": (
        "selfsynth.data.folder",
        "load_chest_xray",
        "chest X-ray pneumonia: {train,val,test}/<class>/",
    ),
    "imagefolder": ("selfsynth.data.folder", "load_imagefolder", "any root/<class>/*.jpg tree"),
    "jsonl": ("selfsynth.data.manifest", "load_jsonl", "manifest root/{train,test}.jsonl (image, label, id)"),
    "csv": ("selfsynth.data.manifest", "load_csv", "manifest root/{train,test}.csv (image, label, id)"),
}
_EXTRA: dict[str, tuple[Loader, str]] = {}


def list_formats() -> dict[str, str]:
    """Format name -> one-line description."""
    out = {name: desc for name, (_, _, desc) in _BUILTIN.items()}
    out.update({name: desc for name, (_, desc) in _EXTRA.items()})
    return out


def register_format(name: str, loader: Loader, description: str = "") -> None:
    """Add a format from outside the package (a plugin or a test)."""
    _EXTRA[name] = (loader, description)


def get_loader(name: str) -> Loader:
    if name in _EXTRA:
        return _EXTRA[name][0]
    if name not in _BUILTIN:
        names = list(list_formats())
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown data format {name!r}{hint}; known formats: {', '.join(names)}")
    module, func, _ = _BUILTIN[name]
    return getattr(importlib.import_module(module), func)


def concept_bank_path(cfg: DataConfig) -> Path | None:
    """The concept bank that ships with a dataset (the world's concepts.json), if there is one."""
    path = Path(cfg.root) / "concepts.json"
    return path if cfg.root and path.is_file() else None
