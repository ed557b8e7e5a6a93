"""Image bytes held inside dataset files (parquet, arrow) as image files on disk, each stored once by its hash.

Every stage reads images from paths, so formats that embed images write them out here first:
``<store>/<sha256[:2]>/<sha256>.<ext>`` under ``$SELFSYNTH_CACHE/images`` (default
``~/.cache/selfsynth/images``). Naming a file by its content means that loading the same data
again gives the same paths (a resumed run's data fingerprint matches), an image whose bytes
change gets a new path (and so a new fingerprint), and nothing stale can be served under an old
name. Bytes are decoded with :func:`~selfsynth.data.checks.verify_image` before they are stored,
so a file in the store already passed the checks every image read from disk goes through.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

from selfsynth.cache import default_cache_root
from selfsynth.data.checks import verify_image
from selfsynth.errors import SelfsynthError

# Leading bytes of the formats checks.IMAGE_FORMATS allows; the extension is only for people
# looking at the store, since Pillow identifies a file by its content.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def store_root() -> Path:
    """The folder stored images go to: ``$SELFSYNTH_CACHE/images``."""
    return default_cache_root() / "images"


def extension(data: bytes) -> str:
    """The usual file extension for image ``data`` by its leading bytes (``.img`` when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for sig, ext in _SIGNATURES if data.startswith(sig)), ".img")


def store_image(data: bytes, *, file: str, context: str, fix: str, root: Path | None = None) -> Path:
    """The stored file holding ``data``, written (after a full decode check) when it is not there yet.

    A decode failure is a DataError naming ``file`` (where the bytes came from), ``context``
    (e.g. the row and column) and ``fix``; the bytes are then not stored.
    """
    digest = hashlib.sha256(data).hexdigest()
    path = (root or store_root()) / digest[:2] / f"{digest}{extension(data)}"
    try:
        # A size check catches a file cut short by a crash (it is written without fsync).
        if path.stat().st_size == len(data):
            return path
    except FileNotFoundError:
        pass
    verify_image(io.BytesIO(data), file=file, context=context, fix=fix)
    _write(path, data)
    return path


def _write(path: Path, data: bytes) -> None:
    """Write to a unique temporary name, then rename: processes storing the same image never see half a file.

    No fsync: the store is a cache that any load rebuilds, and one fsync per image would cost
    minutes on a large dataset.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SelfsynthError(
            f"cannot write the image store {path.parent} ({e.strerror or e}); "
            "set SELFSYNTH_CACHE to a writable folder"
        ) from None
