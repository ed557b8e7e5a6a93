"""The data formats selfsynth reads, by name, with a did-you-mean for a mistyped one, and what each offers.

Each format is a function ``load(cfg, split, problems) -> list[Example]`` in its own module,
imported only when used. Adding a format is one entry here (or :func:`register_format` from
outside the package). A format may also declare :class:`Capabilities`: what it offers beyond
labelled images (a concept bank, general pairs, per-image visible concepts); stages, metrics
and the report ask for a capability instead of testing a format's name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsynth.data.checks import Problems
from selfsynth.errors import ConfigError
from selfsynth.records import QA, Example

if TYPE_CHECKING:
    from selfsynth.config import DataConfig

Loader = Callable[["DataConfig", str, Problems], list[Example]]


@dataclass(frozen=True)
class Capabilities:
    """What a dataset offers beyond its labelled images; the defaults offer nothing.

    - ``concept_bank(cfg)``: the path of the concept bank the dataset ships (the ``concepts``
      stage's default when ``concepts.path`` is empty).
    - ``general_pairs(cfg, train, describe)``: general (non-domain) training pairs for the
      training images, mixed into every round's fine-tuning; ``describe`` are the run's
      description prompts.
    - ``general_vqa(cfg)``: multiple-choice items ``{image, question, options, answer, ...}``
      (``image`` a path) for the general-ability score; the evaluate stage keeps the test images'.
    - ``visibility``: examples carry ``meta["visible_concepts"]``, the ground truth that the
      grounding metrics check citations against.
    - ``citer(text, phrases)``: the phrases an answer cites, where the dataset needs its own
      matcher (default: ``metrics.grounding.cite_phrases``).
    - ``train_manifest``: a JSONL file under the root listing the training images as
      ``{"id", "image"}`` rows (image relative to the root), where the report finds images.
    - ``validation``: the loader accepts split "validation" (its own held-out images); other
      formats get one carved from train by ``data.validation_per_class``.
    """

    concept_bank: Callable[[DataConfig], str] | None = None
    general_pairs: Callable[[DataConfig, Sequence[Example], Sequence[str]], list[QA]] | None = None
    general_vqa: Callable[[DataConfig], list[dict[str, Any]]] | None = None
    visibility: bool = False
    citer: Callable[[str, list[str]], list[str]] | None = None
    train_manifest: str = ""
    validation: bool = False


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
    "hf": (
        "selfsynth.data.hf",
        "load",
        "Hugging Face datasets: a save_to_disk folder or parquet files (image and label columns)",
    ),
}
# name -> the module whose ``CAPABILITIES`` the format offers (imported only when asked)
_BUILTIN_CAPABILITIES = {"world": "selfsynth.data.world_files"}
_EXTRA: dict[str, tuple[Loader, str, Capabilities]] = {}


def list_formats() -> dict[str, str]:
    """Format name -> one-line description."""
    out = {name: desc for name, (_, _, desc) in _BUILTIN.items()}
    out.update({name: desc for name, (_, desc, _) in _EXTRA.items()})
    return out


def register_format(
    name: str, loader: Loader, description: str = "", capabilities: Capabilities | None = None
) -> None:
    """Add a format from outside the package (a plugin or a test); it is then valid in ``data.format``."""
    _EXTRA[name] = (loader, description, capabilities or Capabilities())


def _check_known(name: str) -> None:
    if name in _EXTRA or name in _BUILTIN:
        return
    names = list(list_formats())
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"unknown data format {name!r}{hint}; known formats: {', '.join(names)}")


def get_loader(name: str) -> Loader:
    _check_known(name)
    if name in _EXTRA:
        return _EXTRA[name][0]
    module, func, _ = _BUILTIN[name]
    return getattr(importlib.import_module(module), func)


def get_capabilities(data: DataConfig | str) -> Capabilities:
    """What the format of ``data`` (a ``DataConfig`` or a format name) offers; unknown names are errors."""
    name = data if isinstance(data, str) else data.format
    _check_known(name)
    if name in _EXTRA:
        return _EXTRA[name][2]
    module = _BUILTIN_CAPABILITIES.get(name)
    return importlib.import_module(module).CAPABILITIES if module else Capabilities()


def image_roots(fmt: str, root: str | Path) -> list[Path]:
    """The folders a format's images may lie in: the data root, or what the format's ``image_roots`` says."""
    root = Path(root)
    if fmt in _EXTRA or fmt not in _BUILTIN:
        return [root]
    roots = getattr(importlib.import_module(_BUILTIN[fmt][0]), "image_roots", None)
    return list(roots(root)) if roots else [root]


def concept_bank_path(cfg: DataConfig) -> Path | None:
    """The concept bank that ships with a dataset (the world's concepts.json), if there is one."""
    path = Path(cfg.root) / "concepts.json"
    return path if cfg.root and path.is_file() else None
