"""Checks every loader shares: paths that must stay inside the data root, images that must open.

A dataset folder is input from outside the program, so a record may point anywhere: ``../``,
an absolute path, or a symlink that leads out of the tree. Loaders resolve every image path
through :func:`resolve_inside`, which refuses those, so a run only ever reads the folder the user
named. :class:`Problems` is how ``skip_bad`` works: a loader wraps each record in
``with problems.item():`` and a DataError inside either stops the load (the default) or is
logged and kept as a :class:`Skipped` entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from selfsynth.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Skipped:
    """One bad record that ``skip_bad`` left out, with where it was found and why."""

    reason: str
    file: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Problems:
    """Collects bad records when ``skip`` is on; otherwise the first one stops the load."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.skipped: list[Skipped] = []

    def add(self, err: DataError) -> None:
        if not self.skip:
            raise err
        log.warning("skipping bad record: %s", err)
        self.skipped.append(Skipped(reason=str(err), file=err.file, line=err.line))

    @contextmanager
    def item(self) -> Iterator[None]:
        """Run one record's parsing; a DataError in it is raised or recorded per ``skip``."""
        try:
            yield
        except DataError as err:
            self.add(err)


def resolve_inside(
    base: Path, rel: str, *, file: str | None = None, line: int | None = None, what: str = "image path"
) -> Path:
    """Resolve ``rel`` against ``base`` and refuse anything that ends up outside ``base``.

    Symlinks are followed before the check, so a link pointing out of the tree is refused too;
    keep a dataset's images inside its folder (copy or bind-mount rather than symlink out).
    """
    if not isinstance(rel, str) or not rel.strip():
        raise DataError(f"empty {what}", file=file, line=line)
    if "\x00" in rel:
        raise DataError(f"{what} {rel!r} contains a NUL byte", file=file, line=line)
    base_real = _real_base(str(base))
    real = os.path.realpath(rel if os.path.isabs(rel) else os.path.join(base, rel))
    if real != base_real and not real.startswith(base_real.rstrip(os.sep) + os.sep):
        raise DataError(
            f"{what} {rel!r} escapes the data root {base} (resolves to {real}); "
            "keep every file inside the dataset folder",
            file=file,
            line=line,
        )
    return Path(real)


@lru_cache(maxsize=64)
def _real_base(base: str) -> str:
    """The data root's real path; cached because every record of a dataset asks for it."""
    return os.path.realpath(base)


def image_file(base: Path, rel: str, *, file: str | None = None, line: int | None = None) -> Path:
    """An existing image file inside ``base`` (resolved, absolute), or a DataError naming it."""
    path = resolve_inside(base, rel, file=file, line=line)
    if not path.is_file():
        raise DataError(f"image not found: {path}", file=file, line=line)
    return path


def verify_image(path: str | Path, *, context: str = "") -> None:
    """Open and decode an image with PIL; a missing, truncated or non-image file is a DataError.

    ``verify()`` checks the container; a reduced-size decode (JPEG draft mode) then catches
    truncated data cheaply, without decoding every image at full resolution.
    """
    from PIL import Image, UnidentifiedImageError

    note = f" {context}" if context else ""

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (64, 64))
            img.load()
    except FileNotFoundError:
        raise DataError(f"image not found{note}", file=str(path)) from None
    except UnidentifiedImageError:
        raise DataError(
            f"not an image PIL can read (corrupt or wrong format){note}", file=str(path)
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"corrupt image ({reason}){note}", file=str(path)) from None


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped), sorted by name."""
    with os.scandir(folder) as entries:
        return sorted(folder / e.name for e in entries if is_image(e.name) and not e.is_dir())


def class_dirs(folder: Path) -> list[Path]:
    """Sub-folders that hold a class each (hidden and macOS metadata folders skipped), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def require_dir(path: Path, hint: str) -> Path:
    if not path.is_dir():
        raise DataError(f"folder not found: {path} ({hint})")
    return path


def require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataError(f"file not found: {path} ({hint})")
    return path
