"""``selfsynth sft``: LoRA SFT from the shell, e.g. under ``accelerate launch`` for several processes or GPUs.

    accelerate launch --num_processes 2 -m selfsynth sft MODEL_DIR train.jsonl OUT_DIR \\
        lr=1e-4 epochs=1 batch_size=32 micro_batch_size=8

``train.jsonl`` holds QA records (``id``, ``image``, ``question``, ``answer``, ``label``; relative
image paths are resolved against the file's folder); ``key=value`` pairs override
``FinetuneConfig`` fields. Rank 0 prints the summary as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from selfsynth.config import FinetuneConfig, from_dict, parse_overrides
from selfsynth.errors import DataError, SelfsynthError
from selfsynth.io import iter_jsonl
from selfsynth.records import QA


def read_qa(path: Path) -> list[QA]:
    out = []
    for n, row in iter_jsonl(path):
        missing = [k for k in ("id", "image", "question", "answer", "label") if k not in row]
        if missing:
            raise DataError(f"missing field(s) {', '.join(missing)}", file=str(path), line=n)
        image = Path(row["image"])
        row["image"] = str(image if image.is_absolute() else path.parent / image)
        out.append(QA.from_dict(row))
    return out


def _add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("model", help="local model directory")
    ap.add_argument("data", type=Path, help="QA records, one JSON object per line")
    ap.add_argument("out", type=Path, help="output folder (adapter/, train_log.jsonl)")
    ap.add_argument("overrides", nargs="*", help="FinetuneConfig key=value settings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    ap.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (a checkpoint stays)"
    )
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--no-feature-cache", action="store_true")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="LoRA SFT on a QA file (runs under accelerate launch / torchrun too)")
    _add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from accelerate.state import PartialState

    from selfsynth.models.vlm import VLM

    cfg = from_dict(FinetuneConfig, parse_overrides(args.overrides), "finetune")
    examples = read_qa(args.data)
    vlm = VLM.load(args.model, dtype=args.dtype, feature_cache=not args.no_feature_cache)
    summary = vlm.train_lora(
        examples,
        cfg,
        args.out,
        seed=args.seed,
        progress=False,
        resume=args.resume,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
    )
    if PartialState().is_main_process:
        print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m selfsynth.commands.sft``: the same command without the ``selfsynth`` front end."""
    ap = argparse.ArgumentParser(prog="python -m selfsynth.commands.sft", description=__doc__.splitlines()[0])
    _add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except SelfsynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
