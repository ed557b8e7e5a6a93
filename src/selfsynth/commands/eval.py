"""``selfsynth eval general|lmms-eval``: general ability of a model before and after tuning.

``eval general --tsv FILE --model DIR`` scores a VLMEvalKit-layout multiple-choice TSV (MMStar,
MMBench, SEED-Bench) with greedy answers; ``eval lmms-eval --model DIR`` prints the lmms-eval
command for the paper's benchmark set on a merged model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="general-ability benchmarks (multiple-choice TSV, lmms-eval command)")
    which = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)

    g = which.add_parser(
        "general", help="score a VLMEvalKit multiple-choice TSV (MMStar, MMBench, SEED-Bench)"
    )
    g.add_argument("--tsv", required=True, help="benchmark TSV: index, question, A, B, ..., answer, image")
    g.add_argument("--model", required=True, help="local model directory (a merged model)")
    g.add_argument("--limit", type=int, default=0, help="score only the first N items (0 = all)")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--max-new-tokens", type=int, default=16)
    g.add_argument("--dtype", default="auto")
    g.add_argument("--device", default="auto")
    g.add_argument(
        "--out",
        help="write the summary and per-item answers as JSON (RUN/general/NAME.json shows in the report)",
    )
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_general)

    lm = which.add_parser("lmms-eval", help="print the lmms-eval command for the paper's benchmarks")
    lm.add_argument("--model", required=True, help="merged model directory (LLaVA-HF layout)")
    lm.add_argument("--tasks", default="", help="comma-separated lmms-eval tasks (default: the paper's set)")
    lm.add_argument("--output-path", default="lmms_eval_out")
    lm.add_argument("--num-processes", type=int, default=1)
    lm.set_defaults(func=run_lmms_eval)


def run_general(args: argparse.Namespace, vlm=None) -> int:
    """``vlm`` lets tests inject a model double; the TSV is checked before any model loads."""
    from selfsynth.errors import ConfigError
    from selfsynth.io import write_json
    from selfsynth.metrics.benchmark import evaluate_items, read_tsv

    if args.limit < 0 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise ConfigError("--limit must be >= 0, --batch-size and --max-new-tokens >= 1")
    items = read_tsv(args.tsv, limit=args.limit)
    if vlm is None:
        from selfsynth.models.vlm import VLM

        if not Path(args.model).is_dir():
            raise ConfigError(f"--model {args.model}: no such model directory")
        vlm = VLM.load(args.model, dtype=args.dtype, device=args.device)
    summary, rows = evaluate_items(
        vlm,
        items,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
    )
    summary = {"name": Path(args.tsv).stem, "tsv": str(args.tsv), "model": str(args.model), **summary}
    if args.out:
        write_json(args.out, {**summary, "items": rows})
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(
        f"{summary['name']}: accuracy {100 * summary['accuracy']:.2f}% on {summary['n']} items "
        f"({summary['unparsed']} answers without a readable choice)"
    )
    for cat, v in summary["per_category"].items():
        print(f"  {cat:<40} {100 * v['accuracy']:6.2f}%  (n={v['n']})")
    if args.out:
        print(f"written: {args.out}")
    return 0


def run_lmms_eval(args: argparse.Namespace) -> int:
    from selfsynth.metrics.benchmark import PAPER_TASKS, lmms_eval_command

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] or list(PAPER_TASKS)
    print(
        lmms_eval_command(
            str(args.model), tasks, output_path=args.output_path, num_processes=args.num_processes
        )
    )
    return 0
