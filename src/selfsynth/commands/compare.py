"""``selfsynth compare RUN_A RUN_B ... [--out DIR]``: several runs in one table and one set of charts."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="put several runs (methods, seeds, settings) in one table and plot")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out", default="compare", help="folder for compare.md and compare.html (default: ./compare)"
    )
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from selfsynth.commands.report import _text_table
    from selfsynth.report import compare_runs

    out = compare_runs(args.run_dirs, args.out)
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(_text_table(out["table"]))
    print(f"written: {out['compare_md']}")
    print(f"written: {out['compare_html']}")
    return 0
