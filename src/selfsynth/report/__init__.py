"""Results tables, charts and the HTML report of a run, and comparisons of several runs.

``write_report(run_dir)`` writes ``RUN/results.md`` and ``RUN/report.html``;
``compare_runs([run_dirs], out_dir)`` writes ``compare.md`` and ``compare.html``. Both only read
what the run's stages wrote (results.json, evaluate/metrics.json, samples.jsonl, concepts), so
regenerating them takes seconds and needs no model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsynth.errors import SelfsynthError

log = logging.getLogger(__name__)


def _markdown(title: str, runs: Sequence[Any]) -> str:
    from selfsynth.report import tables

    parts = [
        f"# {tables.md_text(title)}\n",
        tables.to_markdown(tables.headline(runs)),
        tables.to_markdown(tables.accuracy_per_round(runs)),
    ]
    parts.extend(tables.to_markdown(tables.per_round(r)) for r in runs)
    parts.extend(tables.to_markdown(t) for r in runs if (t := tables.grounding_table(r)))
    general = tables.general_table(runs)
    if general:
        parts.append(tables.to_markdown(general))
    parts.extend(skipped_note(r) for r in runs if r.skipped)
    return "\n".join(parts)


def skipped_note(run: Any, limit: int = 20) -> str:
    """A markdown list of the bad records ``data.skip_bad`` left out of ``run`` (the first ``limit``)."""
    from selfsynth.report import tables

    lines = [f"**{tables.md_text(run.name)}: {len(run.skipped)} bad records skipped (data.skip_bad)**\n"]
    for s in run.skipped[:limit]:
        where = ":".join(str(x) for x in (s.get("file"), s.get("line")) if x is not None)
        lines.append(
            f"- {tables.md_text(str(s.get('split', '')))} {tables.md_text(where)}: {tables.md_text(str(s.get('reason', '')))}"
        )
    if len(run.skipped) > limit:
        lines.append(f"- ... and {len(run.skipped) - limit} more (results.json: data_skipped)")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> dict[str, Any]:
    """Write ``results.md`` and ``report.html`` into ``run_dir``; returns their paths and the headline rows."""
    from selfsynth.io import atomic_write_text
    from selfsynth.report import html, tables
    from selfsynth.report.load import load_run

    run = load_run(run_dir)
    md_path = run.dir / "results.md"
    html_path = run.dir / "report.html"
    atomic_write_text(md_path, _markdown(f"Results: {run.name}", [run]))
    html.write_html(html_path, html.render_run(run))
    log.info("report written: %s", html_path)
    head = tables.headline([run])
    return {
        "results_md": str(md_path),
        "report_html": str(html_path),
        "rounds": len(run.rounds),
        "table": {"header": head.header, "rows": head.rows},
    }


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """One table and one set of charts for several runs (methods, seeds, settings)."""
    from selfsynth.io import atomic_write_text
    from selfsynth.report import html, tables
    from selfsynth.report.load import load_run

    if not run_dirs:
        raise SelfsynthError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, str] = {}
    for r in runs:
        key = str(r.dir.resolve())
        if key in seen:
            raise SelfsynthError(f"{r.dir} is given twice")
        seen[key] = r.name
    out = Path(out_dir)
    md_path, html_path = out / "compare.md", out / "compare.html"
    atomic_write_text(md_path, _markdown(f"Comparison of {len(runs)} runs", runs))
    html.write_html(html_path, html.render_compare(runs))
    head = tables.headline(runs)
    return {
        "compare_md": str(md_path),
        "compare_html": str(html_path),
        "table": {"header": head.header, "rows": head.rows},
    }
