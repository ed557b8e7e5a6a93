"""Time the sentence encoder on a finished run's own texts, and check that a text's vector is its own.

Two workloads from a run folder (e.g. ``DEMO/run``): the select stage's descriptions, encoded
in one call, and the rejection-sampling candidates of rounds 2 and on, one call per chunk as the
sample stage makes them (each call mixes many lengths). For each ``--pad`` value (texts are
padded to a multiple of that many tokens; 1 is one token count per forward) it prints the
seconds, the forward passes, the ratio against the first value, and the largest difference
between a text encoded alone and the same text encoded within its call (0 means a resumed run
gets the vectors of an uninterrupted one). Name the CPU next to any figure you quote.

    .venv/bin/python bench/embed.py DEMO/run
    .venv/bin/python bench/embed.py DEMO/run --pad 16 1 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from selfsynth.models import embed

log = logging.getLogger("bench.embed")


def workloads(run: Path) -> dict[str, list[list[str]]]:
    """``{"descriptions": [texts], "candidates": [texts per sample chunk]}`` from a run folder."""
    desc = [
        d
        for f in sorted((run / "round_1" / "describe").glob("part-*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
        for d in json.loads(line).get("descriptions", [])
    ]
    chunks = []
    for f in sorted(run.glob("round_*/sample/part-*.jsonl")):
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
        chunks.append(sorted({c for r in rows for c in r.get("candidates", [])}))
    out = {"descriptions": [desc] if desc else [], "candidates": [c for c in chunks if c]}
    if not any(out.values()):
        raise SystemExit(f"{run} has no round_1/describe or round_*/sample parts: give a finished run folder")
    return out


def time_calls(calls: list[list[str]], rows: int, precision: str) -> tuple[float, int, float]:
    """Seconds and forwards for the calls on a cold encoder; largest alone-vs-in-call difference."""
    enc = embed.TextEncoder(batch_size=rows, precision=precision)
    enc.encode(["warm-up text"])
    enc._mem.clear()
    enc.model_calls = 0
    t = time.perf_counter()
    vecs = [enc.encode(c) for c in calls]
    seconds, forwards = time.perf_counter() - t, enc.model_calls
    worst = 0.0
    probe = embed.TextEncoder(batch_size=rows, precision=precision)
    for c, v in zip(calls[:3], vecs, strict=False):
        for i in range(0, len(c), max(1, len(c) // 8)):
            probe._mem.clear()
            worst = max(worst, float(np.abs(probe.encode([c[i]])[0] - v[i]).max()))
    return seconds, forwards, worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run folder (the demo's DEMO/run)")
    ap.add_argument("--pad", type=int, nargs="+", default=[16, 1], help="pad multiples to compare")
    ap.add_argument("--rows", type=int, default=32, help="texts per forward pass")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    loads = workloads(args.run)
    for name, calls in loads.items():
        if not calls:
            continue
        texts = sum(len(c) for c in calls)
        first = None
        for pad in args.pad:
            embed.PAD_MULTIPLE = pad
            seconds, forwards, worst = time_calls(calls, args.rows, args.precision)
            first = first or seconds
            log.info(
                "%s (%d texts in %d calls), pad %d: %.2f s, %d forwards, %.2fx the time of pad %d, "
                "alone vs in call %.1e",
                name, texts, len(calls), pad, seconds, forwards, seconds / first, args.pad[0], worst,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
