"""``selfsynth status RUN_DIR``: which stages of a run are finished, with counts and timings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfsynth.errors import SelfsynthError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show which stages of a run are done")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfsynth.runs import iter_manifests

    root = Path(args.run_dir)
    if not root.is_dir():
        raise SelfsynthError(f"{root}: no such run directory")
    done = dict(iter_manifests(root))
    partial = sorted(str(p.parent.relative_to(root)) for p in root.rglob("_progress.json"))
    if args.json:
        print(json.dumps({"done": done, "in_progress": partial}, indent=2))
        return 0
    for name, m in sorted(done.items(), key=lambda kv: kv[1].get("finished_at", "")):
        extra = ", ".join(
            f"{k}={v}"
            for k, v in m.items()
            if k not in ("stage", "fingerprint", "finished_at") and not isinstance(v, (dict, list))
        )
        print(f"done        {name:<24} {extra}")
    for name in partial:
        parts = len(list((root / name).glob("part-*.jsonl")))
        print(f"in progress {name:<24} {parts} chunk(s) saved")
    if not done and not partial:
        print("nothing done yet")
    return 0
