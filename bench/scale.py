"""Benchmark the describe stage data-parallel: 1 and 2 processes (and each installed engine) on one world.

Each setting runs the concepts and describe stages of ``configs/world.yaml`` under ``torchrun``
(one process: plain ``python``) in a fresh run folder, times the describe stage on the main rank,
and checks that each engine wrote the same description rows at every process count. Prints wall
times and speed-ups against the first setting.

    .venv/bin/python bench/scale.py --world demo/world --model ~/.cache/selfsynth/base-<fp> --per-class 8

The machine's cores are shared by the processes: on 2 cores expect little gain; the identical rows
and the per-process overhead are the point there.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench.scale")
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "world.yaml"


def worker(args: argparse.Namespace) -> int:
    """One rank: concepts on the main rank, then describe shared by every rank; the main rank reports."""
    from selfsynth import distributed, pipeline
    from selfsynth.config import load_config
    from selfsynth.io import fingerprint
    from selfsynth.stages.concepts import run_concepts
    from selfsynth.stages.describe import run_describe

    overrides = [f"data.root={args.world}", f"model.path={args.model}", f"model.engine={args.engine}"]
    overrides += [f"data.max_train_per_class={args.per_class}", *args.overrides]
    cfg = load_config(RECIPE, overrides)
    distributed.init(cfg.model.device)
    ctx = pipeline.load_context(cfg, Path(args.run_dir), progress=False)
    distributed.main_first(run_concepts, ctx)
    distributed.barrier()
    t0 = time.perf_counter()
    distributed.sharded(run_describe, ctx, cfg.model.path, fingerprint([cfg.model.path, args.engine]))
    seconds = time.perf_counter() - t0
    if distributed.is_main():
        rows = "".join(
            p.read_text() for p in sorted((Path(args.run_dir) / "round_1/describe").glob("part-*"))
        )
        out = {
            "seconds": seconds,
            "images": len(ctx.train),
            "rows_sha256": hashlib.sha256(rows.encode()).hexdigest(),
        }
        Path(args.result).write_text(json.dumps(out))
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_setting(args: argparse.Namespace, procs: int, engine: str, tmp: Path) -> dict:
    run_dir = tmp / f"{engine}-{procs}"
    result = tmp / f"{engine}-{procs}.json"
    me = [str(Path(__file__).resolve()), "--worker", "--run-dir", str(run_dir), "--result", str(result)]
    me += [
        "--world",
        args.world,
        "--model",
        args.model,
        "--engine",
        engine,
        "--per-class",
        str(args.per_class),
    ]
    me += [*args.overrides]
    if procs == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}"]
        cmd += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", *me]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    out = json.loads(result.read_text())
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, help="a world folder (selfsynth world make)")
    p.add_argument("--model", required=True, help="a model directory (the embedded base, or any HF VLM)")
    p.add_argument("--per-class", type=int, default=8, help="training images per class to describe")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--engines", nargs="+", default=["hf", "vllm"], help="engines to try where installed")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. describe.samples=4")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="hf", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        return worker(args)
    engines = [e for e in args.engines if e == "hf" or importlib.util.find_spec(e) is not None]
    for e in sorted(set(args.engines) - set(engines)):
        log.info("engine %s: not installed here, skipped", e)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for engine in engines:
            for procs in args.procs:
                results[(engine, procs)] = run_setting(args, procs, engine, Path(tmp))
    first = results[(engines[0], args.procs[0])]
    log.info("%-6s %5s %8s %9s %8s %s", "engine", "procs", "images", "describe", "speedup", "rows")
    for (engine, procs), r in results.items():
        # Engines sample with their own random streams: rows are compared within an engine.
        own = results[(engine, args.procs[0])]
        same = "same" if r["rows_sha256"] == own["rows_sha256"] else "DIFFERENT"
        base = first
        log.info(
            "%-6s %5d %8d %8.1fs %7.2fx %s",
            engine,
            procs,
            r["images"],
            r["seconds"],
            base["seconds"] / r["seconds"],
            same,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
