"""``selfsynth export RUN --format F --out DIR``: a round's training pairs in another trainer's layout.

``selfsynth export runs/cub --format sharegpt --out cub_r3`` writes the pairs the last round
trained on (``--round R`` for another) with each image's label, selected concepts and scores, for
LLaVA, LLaMA-Factory, ms-swift, TRL or Hugging Face ``datasets``. Only the task pairs go out by
default: the general pairs of the fine-tuning mix are the dataset's own captions and VQA, which
a user re-mixes in their trainer; ``--include-general`` adds them.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from selfsynth.export.formats import FORMATS

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a round's training pairs for LLaVA, LLaMA-Factory, ms-swift, TRL or HF datasets",
        description="Formats: " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()),
    )
    p.add_argument("run_dir", metavar="RUN", help="the run directory")
    p.add_argument("--round", type=int, default=None, help="default: the last round that has training pairs")
    p.add_argument("--format", required=True, help=" | ".join(FORMATS))
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument(
        "--copy-images",
        action="store_true",
        help="copy the images under OUT/images/ (default: paths to them)",
    )
    p.add_argument(
        "--include-general", action="store_true", help="also the general pairs mixed into the fine-tuning"
    )
    p.add_argument("--name", default="", help="dataset name (default: selfsynth_<run>_round<R>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfsynth.export.formats import ExportOptions, check_format, check_out, dataset_name, export_pairs
    from selfsynth.export.pairs import load_pairs, pick_round, run_source

    check_format(args.format)  # bad arguments fail before the run's files are read
    check_out(Path(args.out))
    run_dir = Path(args.run_dir)
    rnd = pick_round(run_dir, args.round)
    pairs = load_pairs(run_dir, rnd, include_general=args.include_general)
    name = dataset_name(args.name or f"selfsynth_{run_dir.absolute().name}_round{rnd}")
    opts = ExportOptions(
        format=args.format,
        out=args.out,
        name=name,
        copy_images=args.copy_images,
        source=run_source(run_dir, rnd),
    )
    written = export_pairs(pairs, opts)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(p.kind for p in pairs).items()))
    print(f"exported {len(pairs)} pairs of round {rnd} ({kinds}) as {args.format}: {written}")
    if args.format == "sharegpt":
        print(f"LLaMA-Factory: dataset_dir={args.out} dataset={name}")
    return 0
