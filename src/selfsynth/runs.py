"""Run directories, stage manifests and chunked checkpoints: what makes every stage resumable.

A stage folder is done when its ``_manifest.json`` exists and carries the fingerprint of the
stage's settings and inputs; the manifest is written last, so its presence means "finished".
A changed setting changes the fingerprint of that stage and, because each fingerprint includes
those of its inputs, of every stage after it. Long stages write their work in numbered chunk
files (atomically), so a killed run loses at most one chunk; a part file is trusted only when its
rows cover exactly its chunk's items, so an empty, cut or foreign part is redone. One process
at a time owns a run directory (``RunLock``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from selfsynth import distributed
from selfsynth.errors import DataError, SelfsynthError
from selfsynth.io import fingerprint, fsync_dir, iter_jsonl, read_json, write_json, write_jsonl

log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"
LOCK = ".lock"
T = TypeVar("T")
# run dir -> the stages this process finished or found done there, for results' stage_seconds
_USED: dict[Path, set[str]] = {}


class Stage:
    """One stage folder of a run: ``Stage(run_dir, "round_1/describe", fp)``."""

    def __init__(self, run_dir: str | Path, name: str, fp: str) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.dir = self.run_dir / name
        self.fp = fp
        self._t0 = time.time()
        self._shared = False  # set by begin() when several ranks run this stage together

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def done(self) -> bool:
        m = self.manifest()
        ok = m is not None and m.get("fingerprint") == self.fp
        if ok:
            self._mark_used()
        return ok

    def _mark_used(self) -> None:
        _USED.setdefault(self.run_dir.resolve(), set()).add(self.name)

    def begin(self) -> Stage:
        """Prepare the folder; stale work from other settings is cleared, matching chunks are kept.

        In a stage that several ranks share, the main rank prepares the folder while the others wait.
        """
        self._shared = distributed.in_collective()
        if distributed.is_main() or not self._shared:
            m = self.manifest()
            progress = self.dir / "_progress.json"
            stale = (m is not None and m.get("fingerprint") != self.fp) or (
                progress.is_file() and _fingerprint_in(progress) != self.fp
            )
            if stale:
                log.info("%s: settings changed, redoing it", self.name)
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            for tmp in self.dir.glob(".*.tmp"):  # half-written by a killed run; never trusted
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            if not progress.is_file():
                write_json(progress, {"fingerprint": self.fp})
        if self._shared:
            distributed.barrier()
        self._t0 = time.time()
        return self

    def finish(self, **info: Any) -> dict[str, Any]:
        manifest = {
            "stage": self.name,
            "fingerprint": self.fp,
            "seconds": round(time.time() - self._t0, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **info,
        }
        write_json(self.manifest_path, manifest)
        (self.dir / "_progress.json").unlink(missing_ok=True)
        self._mark_used()
        return manifest

    def chunks(
        self,
        items: Sequence[T],
        size: int,
        work: Callable[[int, Sequence[T]], list[dict[str, Any]]],
        *,
        desc: str = "",
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Run ``work(chunk_index, chunk)`` over fixed-size chunks, keeping finished chunk files.

        Chunk boundaries depend only on ``size`` and the item order, and ``work`` must seed itself
        from the chunk index, so a resumed run produces the same rows as an uninterrupted one.
        """
        from tqdm.auto import tqdm

        size = max(1, size)
        n = (len(items) + size - 1) // size
        if self._shared:
            # Each rank computes its share of the missing chunks; the main rank then reads them all.
            mine = distributed.my_chunks(n)
            bar = tqdm(
                total=len(mine), desc=desc or self.name, disable=not progress, unit="chunk", leave=False
            )
            for c in mine:
                part = self.dir / f"part-{c:05d}.jsonl"
                chunk = items[c * size : (c + 1) * size]
                if self._read_part(part, chunk) is None:
                    write_jsonl(part, work(c, chunk))
                bar.update(1)
            bar.close()
            distributed.barrier()
            if not distributed.is_main():
                raise distributed.ShardDone(self.name)
        rows: list[dict[str, Any]] = []
        bar = tqdm(total=len(items), desc=desc or self.name, disable=not progress, unit="img", leave=False)
        for c in range(n):
            part = self.dir / f"part-{c:05d}.jsonl"
            chunk = items[c * size : (c + 1) * size]
            got = self._read_part(part, chunk)
            if got is None:
                got = work(c, chunk)
                write_jsonl(part, got)
            rows.extend(got)
            bar.update(len(chunk))
        bar.close()
        return rows

    def _read_part(self, part: Path, chunk: Sequence[Any]) -> list[dict[str, Any]] | None:
        """The part's rows when they are this chunk's, else None (missing, or stale: redo it)."""
        if not part.is_file():
            return None
        try:
            rows = [obj for _, obj in iter_jsonl(part)]
        except (DataError, UnicodeDecodeError) as e:
            log.warning("%s: %s is unreadable (%s), redoing it", self.name, part.name, e)
            return None
        why = part_mismatch(rows, chunk)
        if why:
            log.warning("%s: %s is stale (%s), redoing it", self.name, part.name, why)
            return None
        return rows


def _fingerprint_in(progress: Path) -> str | None:
    try:
        return read_json(progress).get("fingerprint")
    except (DataError, AttributeError):  # unreadable: trust none of the folder's work
        return None


def part_mismatch(rows: Sequence[dict[str, Any]], chunk: Sequence[Any]) -> str:
    """Why ``rows`` are not the work of ``chunk`` ("" when they are).

    Items with an ``id`` must be covered in order, each by one or more rows whose ``image_id``
    (else ``id``) is that id or starts with ``id#`` (the stages' per-question rows); items
    without one need at least one row each.
    """
    ids = [getattr(item, "id", None) for item in chunk]
    if len(rows) < len(chunk):
        return f"{len(rows)} rows for {len(chunk)} items"
    if any(i is None for i in ids):
        return ""
    k = -1
    for n, row in enumerate(rows):
        rid = str(row.get("image_id", row.get("id", "")))
        if k >= 0 and _row_of(rid, ids[k]):
            continue
        k += 1
        if k >= len(ids) or not _row_of(rid, ids[k]):
            want = ids[k] if k < len(ids) else "nothing"
            return f"row {n + 1} is {rid!r}, expected {want!r}"
    if k != len(ids) - 1:
        return f"no rows for {ids[k + 1]!r}"
    return ""


def _row_of(row_id: str, item_id: str) -> bool:
    return row_id == item_id or row_id.startswith(f"{item_id}#")


class RunLock:
    """An exclusive, non-blocking lock on a run directory: ``RUN/.lock`` holds the owner's pid and host.

    ``flock`` ends with the process, so a killed run leaves no lock behind; the file itself stays
    (removing it would let two processes lock two different files of the same name).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid, _, host = os.pread(fd, 256, 0).decode("utf-8", "replace").strip().partition(" ")
            os.close(fd)
            where = f"pid {pid or '?'}" + (f" on {host}" if host and host != socket.gethostname() else "")
            raise SelfsynthError(
                f"{self.run_dir} is in use by another run ({where}, lock {self.path}); wait for it to "
                f"finish or stop it (kill {pid or '<pid>'}), then continue it with --resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        fsync_dir(self.run_dir)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def hashed_settings(cfg: Any, unhashed: dict[str, Any]) -> dict[str, Any]:
    """A settings dataclass as a dict for a fingerprint, less the settings at their ``unhashed`` value.

    A setting added later is left out at the value that reproduces the earlier behaviour, so work
    done before it existed keeps its fingerprint and is reused.
    """
    return {k: v for k, v in dataclasses.asdict(cfg).items() if not (k in unhashed and v == unhashed[k])}


def stage_fp(config_slice: Any, *inputs: str) -> str:
    """Fingerprint of a stage from its settings and the fingerprints of what it reads."""
    return fingerprint({"config": config_slice, "inputs": list(inputs)})


def stage_fingerprint(run_dir: str | Path, name: str) -> str | None:
    """The fingerprint stage ``name`` finished with (its manifest), else the one it began with, else None."""
    folder = Path(run_dir) / name
    manifest = Stage(run_dir, name, "").manifest()
    if manifest is not None:
        return manifest.get("fingerprint")
    progress = folder / "_progress.json"
    return _fingerprint_in(progress) if progress.is_file() else None


def used_stage_seconds(run_dir: str | Path) -> float:
    """Seconds the stages this process finished or reused in ``run_dir`` took when they ran.

    A resumed run reuses stages an earlier invocation finished; their manifests keep what they
    cost, so this is the run's compute however many invocations made it. Stages of other settings
    left in the folder are not counted.
    """
    root = Path(run_dir)
    total = 0.0
    for name in _USED.get(root.resolve(), ()):
        m = Stage(root, name, "").manifest() or {}
        if isinstance(m.get("seconds"), (int, float)):
            total += m["seconds"]
    return total


def iter_manifests(run_dir: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    root = Path(run_dir)
    for m in sorted(root.rglob(MANIFEST)):
        try:
            yield str(m.parent.relative_to(root)), json.loads(m.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue


def chunk_seed(seed: int, stage: str, chunk: int) -> int:
    """A per-chunk seed that does not depend on which chunks ran before (resume-safe)."""
    return int(fingerprint([seed, stage, chunk])[:8], 16)
