"""``selfsynth report RUN_DIR``: (re)write a run's results.md and self-contained report.html."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write results.md and report.html of a run (seconds, no model)")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print the headline table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from selfsynth.report import write_report

    out = write_report(args.run_dir)
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(_text_table(out["table"]))
    print(f"written: {out['results_md']}")
    print(f"written: {out['report_html']}")
    return 0


def _text_table(table: dict) -> str:
    rows = [table["header"], *table["rows"]]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(table["header"]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
