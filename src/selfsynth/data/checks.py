"""Checks every loader shares: paths that must stay inside the data root, images that must open.

A dataset folder is input from outside the program, so a record may point anywhere: ``../``,
an absolute path, or a symlink that leads out of the tree. Every path read from an input file goes
through :func:`resolve_inside` (or :func:`checked_path`), which refuses those, so a run only ever
reads the folder the user named. Every image read from disk is opened by :func:`decode_image` (or
checked by :func:`verify_image`): only the raster formats in ``IMAGE_FORMATS``, at most
``PIL.Image.MAX_IMAGE_PIXELS`` pixels, and any decoder failure becomes a DataError naming the file.
:class:`Problems` is how ``skip_bad`` works: a loader wraps each record in
``with problems.item():`` and a DataError inside either stops the load (the default) or is
logged and kept as a :class:`Skipped` entry.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from selfsynth.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Ordinary raster formats only: Pillow's other plugins (EPS through Ghostscript, for one) run far
# more than a pixel decoder on whatever file a record names.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# What a dataset image that fails to decode should make the user do.
IMAGE_FIX = (
    "replace or remove the file, or set data.skip_bad=true to check every image when the data loads "
    "and leave bad ones out"
)


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
    if rel is not None and not isinstance(rel, str):
        raise DataError(f"{what} must be a string, got {rel!r}", file=file, line=line)
    if not rel or not rel.strip():
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


def checked_path(
    base: Path, rel: Any, *, file: str | None = None, line: int | None = None, what: str = "image path"
) -> Path:
    """``rel`` as written (joined to ``base`` when relative), once :func:`resolve_inside` accepts it.

    For callers that record the path: they keep its spelling rather than the resolved one.
    """
    resolve_inside(base, rel, file=file, line=line, what=what)
    path = Path(rel)
    return path if path.is_absolute() else Path(base) / path


def decode_image(
    path: str | Path, *, mode: str = "RGB", context: str = "", fix: str = IMAGE_FIX
) -> Image.Image:
    """The image at ``path`` fully decoded and converted to ``mode``, or a DataError naming the file and ``fix``."""
    with _decoding(path, context, fix) as im:
        return im.convert(mode)


def verify_image(
    path: str | Path | BinaryIO, *, context: str = "", fix: str = IMAGE_FIX, file: str | None = None
) -> None:
    """Check that ``path`` decodes as :func:`decode_image` would; a DataError names it otherwise.

    ``verify()`` also checks what decoding skips (PNG chunk checksums); the full decode then
    catches truncated data, so an image that passes here opens later. ``path`` may be an
    in-memory file (image bytes from inside a dataset file); ``file`` is then what errors name.
    """
    with _decoding(path, context, fix, file) as im:
        im.verify()
    with _decoding(path, context, fix, file) as im:
        im.load()


@contextmanager
def _decoding(
    path: str | Path | BinaryIO, context: str, fix: str, file: str | None = None
) -> Iterator[Image.Image]:
    """Open ``path`` with the allowed formats and the pixel limit; turn every decoder failure into a DataError."""
    from PIL import Image, UnidentifiedImageError

    note = f" {context}" if context else ""
    file = str(path) if file is None else file

    def bad(reason: str) -> DataError:
        return DataError(f"{reason}{note}; {fix}", file=file)

    try:
        with Image.open(path, formats=_open_formats()) as im:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and im.width * im.height > limit:
                raise bad(
                    f"not a readable image ({im.width}x{im.height} pixels is over the {limit} pixel "
                    "limit that guards against decompression bombs)"
                )
            yield im
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(
            f"image file not found{note}; check the data root and the record's image path", file=file
        ) from None
    except (IsADirectoryError, PermissionError) as e:
        raise bad(f"cannot read the image file ({e.strerror})") from None
    except Image.DecompressionBombError:
        raise bad("not a readable image (too many pixels: a possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise bad(f"not a readable image (not {', '.join(IMAGE_FORMATS)} data, or corrupt)") from None
    except _DECODE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise bad(f"not a readable image (corrupt or truncated: {reason})") from None


@lru_cache(maxsize=1)
def _open_formats() -> tuple[str, ...]:
    """The allowed formats this Pillow build can open (asking for a missing one is a KeyError)."""
    from PIL import Image

    Image.init()
    return tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)


# What Pillow's decoders raise on malformed data; struct.error and SyntaxError come from plugins.
_DECODE_ERRORS = (
    OSError,
    EOFError,
    SyntaxError,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
)


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
