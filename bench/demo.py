"""Time ``selfsynth demo`` by phase, with its peak memory, and compare it with another demo folder.

Runs the demo in a child process (``--out OUT``; the base model comes from the cache, or is built
first, which the table then shows as its own phases), and prints the seconds of each phase:
the base build's steps (when it was built in this run), the world, and every stage of every
round summed by kind (describe, select, synthesize, finetune, sample, evaluate). ``--baseline``
names an earlier demo folder (e.g. one made by the previous default on this machine) and adds
its seconds and the ratio per phase. Name the CPU next to any figure you quote.

    .venv/bin/python bench/demo.py --out demo-now
    .venv/bin/python bench/demo.py --out demo-now --baseline demo-before --empty-cache
    .venv/bin/python bench/demo.py --report demo-now --baseline demo-before   # no run: tables only
    .venv/bin/python bench/demo.py --out demo-grounded --config configs/world_grounded.yaml --baseline demo-now
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from selfsynth.cache import default_cache_root

STAGES = ("concepts", "describe", "select", "synthesize", "finetune", "sample", "evaluate")


def phases(demo: Path) -> dict[str, float]:
    """Seconds per phase from a demo folder's manifests (and ``bench_demo.json`` when this script ran it)."""
    out: dict[str, float] = defaultdict(float)
    timing = demo / "bench_demo.json"
    if timing.is_file():
        t = json.loads(timing.read_text(encoding="utf-8"))
        for k, v in t.get("build", {}).items():
            out[f"base build: {k.removesuffix('_s')}"] = v
        out["total (wall)"] = t["wall_s"]
        out["peak RSS (GB)"] = t["peak_rss_gb"]
    for m in sorted((demo / "run").rglob("_manifest.json")):
        info = json.loads(m.read_text(encoding="utf-8"))
        stage = info.get("stage", "")
        kind = stage.rsplit("/", 1)[-1]
        if kind in STAGES and isinstance(info.get("seconds"), (int, float)):
            label = "evaluate (base)" if stage == "base/evaluate" else kind
            out[label] += info["seconds"]
    return dict(out)


def run_demo(out: Path, cache: Path | None, extra: list[str]) -> None:
    env = dict(os.environ)
    if cache is not None:
        env["SELFSYNTH_CACHE"] = str(cache)
    cmd = [sys.executable, "-m", "selfsynth", "demo", "--out", str(out), "--no-progress", *extra]
    t = time.time()
    subprocess.run(cmd, check=True, env=env)
    wall = time.time() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    build = {}
    # Only a build made during this run is one of its phases; an older cached one is not.
    root = Path(cache) if cache is not None else default_cache_root()
    for manifest in root.glob("base-*/build_manifest.json"):
        if manifest.stat().st_mtime >= t:
            build = json.loads(manifest.read_text(encoding="utf-8")).get("timings", {})
    record = {"wall_s": round(wall, 1), "peak_rss_gb": round(peak, 2), "build": build}
    (out / "bench_demo.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def table(now: dict[str, float], before: dict[str, float] | None) -> str:
    names = list(now) + [k for k in (before or {}) if k not in now]
    head = "| phase | seconds |" + (" baseline | ratio (baseline / now) |" if before else "")
    lines = [head, "|---|---:|" + ("---:|---:|" if before else "")]
    for k in names:
        a = now.get(k)
        row = f"| {k} | {'-' if a is None else f'{a:.1f}'} |"
        if before is not None:
            b = before.get(k)
            ratio = f"{b / a:.2f}x" if a and b else "-"
            row += f" {'-' if b is None else f'{b:.1f}'} | {ratio} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="demo folder to create (must not exist yet)")
    p.add_argument("--report", help="an existing demo folder: print its table, run nothing")
    p.add_argument("--baseline", help="an earlier demo folder to compare with")
    p.add_argument(
        "--empty-cache", action="store_true", help="build the base model into a fresh cache (timed as phases)"
    )
    p.add_argument(
        "--cache",
        help="cache folder for the child (SELFSYNTH_CACHE); kept afterwards, so an empty one builds the base "
        "once, timed as phases, for later runs",
    )
    p.add_argument("--config", help="recipe passed to selfsynth demo (default: its own, configs/world.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="passed to selfsynth demo")
    args = p.parse_args(argv)
    if bool(args.out) == bool(args.report):
        p.error("give --out (run and time a demo) or --report (an existing one)")
    extra = ["--config", str(Path(args.config).resolve())] if args.config else []
    extra += args.overrides
    if args.out:
        out = Path(args.out).resolve()
        if out.exists():
            p.error(f"{out} exists; a timing needs a fresh folder")
        if args.empty_cache and args.cache:
            p.error("give --empty-cache (a throwaway cache) or --cache DIR, not both")
        if args.empty_cache:
            with tempfile.TemporaryDirectory() as cache:
                run_demo(out, Path(cache), extra)
        else:
            run_demo(out, Path(args.cache).resolve() if args.cache else None, extra)
    demo = Path(args.out or args.report).resolve()
    before = phases(Path(args.baseline).resolve()) if args.baseline else None
    print(table(phases(demo), before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
