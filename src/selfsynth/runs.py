"""Run directories, stage manifests and chunked checkpoints: what makes every stage resumable.

A stage folder is done when its ``_manifest.json`` exists and carries the fingerprint of the
stage's settings and inputs; the manifest is written last, so its presence means "finished".
A changed setting changes the fingerprint of that stage and, because each fingerprint includes
those of its inputs, of every stage after it. Long stages write their work in numbered chunk
files (atomically), so a killed run loses at most one chunk.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from selfsynth import distributed
from selfsynth.io import fingerprint, iter_jsonl, read_json, write_json, write_jsonl

log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"
T = TypeVar("T")


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
        return m is not None and m.get("fingerprint") == self.fp

    def begin(self) -> Stage:
        """Prepare the folder; stale work from other settings is cleared, matching chunks are kept.

        In a stage that several ranks share, the main rank prepares the folder while the others wait.
        """
        self._shared = distributed.in_collective()
        if distributed.is_main() or not self._shared:
            m = self.manifest()
            progress = self.dir / "_progress.json"
            stale = (m is not None and m.get("fingerprint") != self.fp) or (
                progress.is_file() and read_json(progress).get("fingerprint") != self.fp
            )
            if stale:
                log.info("%s: settings changed, redoing it", self.name)
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
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
                if not part.is_file():
                    write_jsonl(part, work(c, items[c * size : (c + 1) * size]))
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
            if part.is_file():
                got = [obj for _, obj in iter_jsonl(part)]
            else:
                got = work(c, chunk)
                write_jsonl(part, got)
            rows.extend(got)
            bar.update(len(chunk))
        bar.close()
        return rows


def stage_fp(config_slice: Any, *inputs: str) -> str:
    """Fingerprint of a stage from its settings and the fingerprints of what it reads."""
    return fingerprint({"config": config_slice, "inputs": list(inputs)})


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
