"""The self-contained HTML pages: one run (``report.html``) and several runs (``compare.html``).

Everything is inline (CSS, SVG charts, images as data URIs); there is no script and no URL, so
the file opens offline and can be mailed as is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from selfsynth.report import tables
from selfsynth.report.gallery import data_roots, esc, heatmap, selection_cards, test_cards
from selfsynth.report.load import RunData, load_bank, load_selection, spread, train_images
from selfsynth.report.plots import Series, line_chart

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.05em;margin:18px 0 6px}.meta{color:#555;font-size:.9em}.note{color:#666;font-size:.85em}
table.results{border-collapse:collapse;font-size:.88em;margin:6px 0}
table.results th,table.results td{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.results td:first-child,table.results th:first-child{text-align:left}
table.results thead th{background:#f2f2f2}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #e4e4e4;font-size:11px}
svg.chart .title{font-weight:600;font-size:13px}svg.chart .grid{stroke:#eee}svg.chart .axis{stroke:#999}
table.confusion{border-collapse:collapse;font-size:.75em}
table.confusion td,table.confusion th{border:1px solid #ddd;padding:2px 4px;text-align:center;min-width:18px}
table.confusion tbody th{text-align:right;white-space:nowrap}
table.confusion td.diag{outline:2px solid #2ca02c;outline-offset:-2px}
th.rot{height:110px;vertical-align:bottom}th.rot div{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{margin:0;border:1px solid #ddd;border-radius:6px;padding:8px;background:#fafafa;font-size:.85em}
.card.ok{border-left:4px solid #2ca02c}.card.wrong{border-left:4px solid #d62728}
.card img{width:100%;max-width:224px;height:auto;display:block;margin:0 auto 6px}
.noimg{height:80px;display:flex;align-items:center;justify-content:center;color:#999;background:#eee}
.ans{margin:6px 0}.lab{font-size:.95em}.scores{color:#666;font-size:.85em}
mark.good{background:#c8f0c8}mark.bad{background:#f6c4c4}mark.cite{background:#fde9a8}
.chip{display:inline-block;border-radius:10px;padding:1px 7px;margin:2px;font-size:.85em}
.chip.good{background:#c8f0c8}.chip.bad{background:#f6c4c4}.chip.cite{background:#fde9a8}
.missed{color:#777;font-size:.8em;margin-top:3px}ol{padding-left:20px;margin:4px 0}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:.8em}
"""

_EXPLAIN = (
    ("ee", "EE"),
    ("cs", "CS"),
    ("ground_precision", "Ground. P"),
    ("ground_recall", "Ground. R"),
    ("halluc_rate", "Halluc."),
    ("grounded_rate", "Grounded"),
)


def _points(run: RunData, key: str, scale: float = 1.0) -> list[tuple[float, float]]:
    pts = []
    for m in ([run.base] if run.base else []) + run.rounds:
        v = m.get(key)
        if isinstance(v, (int, float)):
            pts.append((float(m.get("round", 0)), scale * float(v)))
    return pts


def _x_labels(runs: Sequence[RunData]) -> dict[float, str]:
    last = max((m["round"] for r in runs for m in r.rounds), default=0)
    return {0.0: "Base", **{float(k): f"R{k}" for k in range(1, last + 1)}}


def accuracy_chart(runs: Sequence[RunData], labels: dict[str, str]) -> str:
    series = []
    for i, r in enumerate(runs):
        name = labels[str(r.dir)]
        color = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")[i % 6]
        series.append(Series(f"{name} sub.", _points(r, "acc_substring", 100), color))
        series.append(Series(f"{name} strict", _points(r, "acc_strict", 100), color, dashed=True))
    return line_chart(
        series, title="Accuracy per round", y_label="%", x_labels=_x_labels(runs), y_range=(0, 100)
    )


def explanation_charts(runs: Sequence[RunData], labels: dict[str, str]) -> str:
    charts = []
    if len(runs) == 1:
        r = runs[0]
        series = [Series(name, _points(r, key)) for key, name in _EXPLAIN]
        charts.append(
            line_chart(
                series, title="Explanation metrics per round", x_labels=_x_labels(runs), y_range=(0, 1)
            )
        )
    else:
        for key, name in (("cs", "CS"), ("ee", "EE"), ("ground_precision", "Grounding precision")):
            series = [Series(labels[str(r.dir)], _points(r, key)) for r in runs]
            charts.append(
                line_chart(series, title=f"{name} per round", x_labels=_x_labels(runs), y_range=(0, 1))
            )
    fs = [Series(labels[str(r.dir)], _points(r, "fs")) for r in runs]
    if any(s.points for s in fs):
        charts.append(line_chart(fs, title="Fluency (perplexity, lower is better)", x_labels=_x_labels(runs)))
    return "".join(charts)


def _page(title: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    # Markup and data URIs never contain "://"; text does only where a model or a setting wrote
    # a URL, and that must stay text: the page may not reference anything outside itself.
    body = body.replace("://", ":&#47;&#47;")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}"
        f'<p class="note">Written by selfsynth report on {esc(stamp)}. Metric definitions: docs/metrics.md.</p>'
        "</body></html>\n"
    )


def _tables(runs: Sequence[RunData]) -> str:
    parts = [tables.to_html(tables.headline(runs), esc), tables.to_html(tables.accuracy_per_round(runs), esc)]
    parts.extend(tables.to_html(tables.per_round(r), esc) for r in runs)
    parts.extend(tables.to_html(t, esc) for r in runs if (t := tables.grounding_table(r)))
    general = tables.general_table(runs)
    if general:
        parts.append(tables.to_html(general, esc))
    return "".join(parts)


def _citer(run: RunData):
    from selfsynth.metrics.grounding import cite_phrases

    return run.capabilities.citer or cite_phrases


def render_run(run: RunData, *, gallery: int = 24, train_gallery: int = 12) -> str:
    labels = tables.run_labels([run])
    final = run.final or run.base or {}
    final_round = final.get("round")
    model = (run.config.get("model") or {}).get("path", "")
    data = run.config.get("data") or {}
    meta = (
        f"method <b>{esc(run.method_name)}</b> · data {esc(data.get('format', '?'))} ({esc(data.get('kind', ''))})"
        f" · base model {esc(model)} · {len(run.rounds)} round(s) evaluated"
        + (f" · {run.seconds:.0f} s" if isinstance(run.seconds, (int, float)) else "")
        + (
            f" · <b>{len(run.skipped)} bad records skipped</b> (results.json: data_skipped)"
            if run.skipped
            else ""
        )
    )
    body = [f'<h1>{esc(run.name)}</h1><p class="meta">{meta}</p>', "<h2>Results</h2>", _tables([run])]
    body.append('<h2>Per round</h2><div class="charts">')
    body.append(accuracy_chart([run], labels) + explanation_charts([run], labels) + "</div>")
    body.append(f"<h2>Confusion matrix ({esc('R' + str(final_round) if final_round else 'base')})</h2>")
    body.append(heatmap(final.get("confusion")))
    per_class = tables.per_class_table(final, limit=40)
    if per_class:
        body.append(tables.to_html(per_class, esc))

    samples = run.samples(final_round)
    if samples:
        shown = _with_citations(run, spread(sorted(samples, key=lambda r: str(r.get("id"))), gallery))
        base_answers = (
            {str(r.get("id")): r.get("answer", "") for r in run.samples(None)} if final_round else {}
        )
        legend = (
            "green: cited and visible in this image; red: cited but not visible (or another species')"
            if run.capabilities.visibility
            else "yellow: clauses citing an expert concept"
        )
        body.append(
            f'<h2>Test answers ({len(shown)} of {len(samples)})</h2><p class="note">{esc(legend)}</p>'
        )
        body.append(
            test_cards(shown, run.dir, _citer(run), base_answers, allowed=data_roots(run.config, run.dir))
        )
    selection = load_selection(run, train_gallery)
    if selection:
        images = train_images(run, {str(r.get("id")) for r in selection})
        body.append("<h2>Training images and their selected concepts Z*</h2>")
        body.append('<p class="note">Information-bottleneck scores in brackets; best first.</p>')
        body.append(selection_cards(selection, images, run.dir, allowed=data_roots(run.config, run.dir)))
    if run.config:
        dump = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
        body.append(f"<h2>Settings</h2><details><summary>config</summary><pre>{esc(dump)}</pre></details>")
    return _page(f"selfsynth report: {run.name}", "".join(body))


def _with_citations(run: RunData, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows lacking ``cited`` (an older evaluate stage) get it from the bank; cheap for a few rows."""
    if all("cited" in r for r in rows):
        return rows
    bank = load_bank(run)
    if not bank:
        return rows
    from selfsynth.metrics.grounding import grounding

    rows = [dict(r) for r in rows]
    offers = run.capabilities
    grounding(rows, bank, citer=offers.citer, with_visibility=offers.visibility)
    return rows


def render_compare(runs: Sequence[RunData]) -> str:
    labels = tables.run_labels(runs)
    listing = "".join(
        f"<li>{esc(labels[str(r.dir)])}: {esc(r.dir)} ({len(r.rounds)} round(s))</li>" for r in runs
    )
    body = [
        f'<h1>Comparison of {len(runs)} runs</h1><ul class="meta">{listing}</ul>',
        "<h2>Results</h2>",
        _tables(runs),
        '<h2>Per round</h2><div class="charts">',
        accuracy_chart(runs, labels),
        explanation_charts(runs, labels),
        "</div>",
    ]
    return _page("selfsynth comparison", "".join(body))


def write_html(path: Path, text: str) -> None:
    from selfsynth.io import atomic_write_text

    atomic_write_text(Path(path), text)
