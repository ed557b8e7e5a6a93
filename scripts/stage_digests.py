"""Print a sha256 per stage output of a run directory, to check that a change left every stage's output as it was.

    python scripts/stage_digests.py RUN_DIR [--json OUT] [--strip PREFIX ...]

Hashes every file a stage writes (JSON lines, JSON, weights), leaving out what records time or place:
manifests, progress files, caches, the run's environment and the rendered reports; in JSON files,
timing fields ("seconds", "*_s") are dropped before hashing.
``--strip PREFIX`` removes a folder prefix from the bytes first, so two runs in different folders compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# Files that hold wall-clock times, absolute paths or host details, so they differ between two equal runs.
SKIP_NAMES = {
    "_manifest.json",
    "_progress.json",
    ".lock",
    "env.json",
    "results.json",
    "results.md",
    "report.html",
}
SKIP_DIRS = {"cache"}
TIME_KEYS = re.compile(r"(^seconds$|_s$|_seconds$|^finished_at$)")


def _untimed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not TIME_KEYS.search(k)}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _normalised(path: Path, data: bytes) -> bytes:
    """JSON and JSON lines without their timing fields; other files as they are."""
    if path.suffix == ".json":
        return json.dumps(_untimed(json.loads(data)), sort_keys=True).encode()
    if path.suffix == ".jsonl":
        rows = [json.dumps(_untimed(json.loads(x)), sort_keys=True) for x in data.splitlines() if x.strip()]
        return "\n".join(rows).encode()
    return data


def digests(run_dir: Path, strip: list[str] | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` for every stage output under ``run_dir``, ``strip`` prefixes removed."""
    out: dict[str, str] = {}
    for f in sorted(run_dir.rglob("*")):
        rel = f.relative_to(run_dir)
        if not f.is_file() or f.name in SKIP_NAMES or rel.parts[0] in SKIP_DIRS:
            continue
        data = f.read_bytes()
        for prefix in strip or ():
            data = data.replace(prefix.encode(), b"")
        out[str(rel)] = hashlib.sha256(_normalised(f, data)).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the digests to this file")
    p.add_argument("--strip", action="append", default=[], help="folder prefix to remove before hashing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    d = digests(args.run_dir, args.strip)
    if not d:
        log.error("%s: no stage outputs found", args.run_dir)
        return 1
    for rel, h in d.items():
        sys.stdout.write(f"{h[:16]}  {rel}\n")
    if args.json:
        args.json.write_text(json.dumps(d, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
