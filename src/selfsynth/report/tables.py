"""Result tables in the paper's layout, as plain data that renders to markdown or HTML.

Headline table: one row per method (Base, NL, L+GE, Ours, No filtering; a run holds one method
plus its base model, ``compare`` merges runs), with the final round's accuracy (substring /
strict), EE, CS, FS, grounding precision / recall / hallucination, grounded rate and general
ability. Runs that differ only in ``name`` and ``seed`` also get a "mean ± sd" row. A second table
gives accuracy per round, a third every metric per round of each run, a fourth the citations of
each stage's answers (Z*, training answers, evaluated answers) of each run.
"""

from __future__ import annotations

import html
import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from selfsynth.report.load import METHOD_ORDER, RunData

DASH = "–"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) else DASH


def two(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else DASH


def one(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else DASH


# (column header, metrics key, formatter); the headline columns, in the paper's order.
COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("Acc. sub. %", "acc_substring", pct),
    ("Acc. strict %", "acc_strict", pct),
    ("EE", "ee", two),
    ("CS", "cs", two),
    ("FS (ppl)", "fs", one),
    ("Ground. P", "ground_precision", two),
    ("Ground. R", "ground_recall", two),
    ("Halluc.", "halluc_rate", two),
    ("Grounded %", "grounded_rate", pct),
    ("General %", "general_vqa", pct),
]


def _cells(m: dict[str, Any] | None) -> list[str]:
    return [f(m.get(k)) if m else DASH for _, k, f in COLUMNS]


def _order(run: RunData) -> tuple[int, str]:
    pos = METHOD_ORDER.index(run.method) if run.method in METHOD_ORDER else len(METHOD_ORDER)
    return pos, run.name


def run_labels(runs: Sequence[RunData]) -> dict[str, str]:
    """Row label per run dir: the method's name, plus the run name where a method repeats."""
    count: dict[str, int] = {}
    for r in runs:
        count[r.method] = count.get(r.method, 0) + 1
    return {
        str(r.dir): r.method_name if count[r.method] == 1 else f"{r.method_name} ({r.name})" for r in runs
    }


def _group_key(run: RunData) -> str:
    cfg = {k: v for k, v in run.config.items() if k not in ("name", "seed")}
    return run.method + json.dumps(cfg, sort_keys=True, default=str)


def _mean_sd(values: list[float], fmt: Callable[[Any], str]) -> str:
    if not values:
        return DASH
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"


def headline(runs: Sequence[RunData]) -> Table:
    runs = sorted(runs, key=_order)
    labels = run_labels(runs)
    rows: list[list[str]] = []
    bases = [r for r in runs if r.base]
    distinct = {
        json.dumps([r.base.get("acc_substring"), r.base.get("acc_strict"), r.base.get("n")]) for r in bases
    }
    if len(distinct) == 1:
        rows.append(["Base", *_cells(bases[0].base)])
    else:
        rows.extend([f"Base ({r.name})", *_cells(r.base)] for r in bases)
    for r in runs:
        rnd = r.final.get("round") if r.final else None
        rows.append([labels[str(r.dir)] + (f" R{rnd}" if rnd else ""), *_cells(r.final)])
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        if r.final:
            groups.setdefault(_group_key(r), []).append(r)
    for members in groups.values():
        if len(members) > 1:
            cells = []
            for _, key, fmt in COLUMNS:
                vals = [m.final[key] for m in members if isinstance(m.final.get(key), (int, float))]
                scale = 100.0 if fmt is pct else 1.0
                cells.append(_mean_sd([v * scale for v in vals], one if fmt is pct else fmt))
            rows.append([f"{members[0].method_name} (mean ± sd, {len(members)} runs)", *cells])
    return Table(
        "Results (final round; Base = the untuned model)",
        ["Method", *[c for c, _, _ in COLUMNS]],
        rows,
        note="Acc. sub. = label substring (paper / Finer rule); strict = first affirmative class mention. "
        "EE, CS, P, R, Halluc. in 0..1; FS = perplexity, lower is better; Grounded = answers citing "
        "at least 2 concepts, all visible. See docs/metrics.md.",
    )


def accuracy_per_round(runs: Sequence[RunData]) -> Table:
    runs = sorted(runs, key=_order)
    labels = run_labels(runs)
    last = max((m["round"] for r in runs for m in r.rounds), default=0)
    rows = []
    for r in runs:
        by_round = {m["round"]: m for m in r.rounds}
        cells = [_acc_pair(r.base)] + [_acc_pair(by_round.get(k)) for k in range(1, last + 1)]
        rows.append([labels[str(r.dir)], *cells])
    return Table(
        "Accuracy per round, % (substring / strict)",
        ["Method", "Base", *[f"R{k}" for k in range(1, last + 1)]],
        rows,
    )


def _acc_pair(m: dict[str, Any] | None) -> str:
    if not m or "acc_substring" not in m:
        return DASH
    return f"{pct(m.get('acc_substring'))} / {pct(m.get('acc_strict'))}"


def per_round(run: RunData) -> Table:
    rows = []
    for m in ([run.base] if run.base else []) + run.rounds + ([run.rl] if run.rl else []):
        name = "RL" if m is run.rl else f"R{m['round']}" if "round" in m else "Base"
        pairs = m.get("train_pairs")
        rows.append([name, *_cells(m), str(pairs) if pairs is not None else DASH])
    return Table(
        f"Every metric per round: {run.method_name} ({run.name})",
        ["Round", *[c for c, _, _ in COLUMNS], "Train pairs"],
        rows,
    )


# (column header, key of a stage's figures, formatter, needs visibility)
STAGE_COLUMNS: list[tuple[str, str, Callable[[Any], str], bool]] = [
    ("Answers", "answers", lambda v: str(v) if isinstance(v, int) else DASH, False),
    ("Fallbacks", "fallback", lambda v: str(v) if isinstance(v, int) else DASH, False),
    ("Cited / answer", "cited_per_answer", two, False),
    ("In class", "class_precision", two, False),
    ("P (visible)", "visible_precision", two, True),
    ("R (visible)", "visible_recall", two, True),
    ("Grounded %", "grounded_rate", pct, True),
    ("P (Z*)", "zstar_precision", two, False),
    ("R (Z*)", "zstar_recall", two, False),
]
_STAGE_NAMES = {"synthesize": "synthesize (train)", "sample": "sample (train)", "evaluate": "evaluate"}


def grounding_table(run: RunData) -> Table | None:
    """Citations per stage, in loop order: Z*, base answers, then each round's training and test answers.

    None for a run whose results predate these figures (``selfsynth run --resume`` adds them).
    """
    rows: list[tuple[str, dict[str, Any]]] = []
    if run.zstar_grounding:
        rows.append(("Z* (select)", run.zstar_grounding))
    for m in ([run.base] if run.base else []) + run.rounds:
        name = f"R{m['round']}" if "round" in m else "Base"
        for stage, figures in (m.get("grounding_by_stage") or {}).items():
            if isinstance(figures, dict) and figures:
                rows.append((f"{name} {_STAGE_NAMES.get(stage, stage)}", figures))
    if not rows:
        return None
    visible = any("visible_precision" in f or "visible_recall" in f for _, f in rows)
    cols = [c for c in STAGE_COLUMNS if visible or not c[3]]
    return Table(
        f"Citations per stage: {run.method_name} ({run.name})",
        ["Stage", *[c for c, _, _, _ in cols]],
        [[name, *[fmt(f.get(key)) for _, key, fmt, _ in cols]] for name, f in rows],
        note="Training answers are the pairs a round trains on, fallbacks left out. In class = share of "
        "cited concepts in the true class's bank; P / R against the image's visible concepts "
        "or its selected concepts Z* (training images only). See docs/metrics.md.",
    )


def general_table(runs: Sequence[RunData]) -> Table | None:
    rows = [
        [r.name, g.get("name", ""), str(g.get("model", "")), pct(g.get("accuracy")), str(g.get("n", DASH))]
        for r in runs
        for g in r.general
    ]
    if not rows:
        return None
    return Table(
        "General-ability benchmarks (selfsynth eval general)",
        ["Run", "Benchmark", "Model", "Acc. %", "n"],
        rows,
    )


def per_class_table(metrics: dict[str, Any] | None, limit: int = 0) -> Table | None:
    per = (metrics or {}).get("per_class")
    if not isinstance(per, dict) or not per:
        return None
    items = sorted(per.items(), key=lambda kv: (kv[1].get("acc_strict", 0.0), kv[0]))
    if limit:
        items = items[:limit]
    rows = [[c, str(v.get("n", "")), pct(v.get("acc_substring")), pct(v.get("acc_strict"))] for c, v in items]
    return Table(
        "Per-class accuracy, final round (worst first)", ["Class", "n", "Acc. sub. %", "Acc. strict %"], rows
    )


# Characters that start markdown markup (emphasis, code, links, tables, raw HTML, entities, headings);
# an underscore between letters or digits cannot, so run names like llava15_cub stay as written.
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|~&#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(s: Any) -> str:
    """``s`` as literal markdown text on one line: every markup character backslash-escaped."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(s).splitlines()))


def to_markdown(t: Table) -> str:
    lines = [f"### {md_text(t.title)}", "", "| " + " | ".join(md_text(h) for h in t.header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(t.header) - 1)) + "|")
    lines.extend("| " + " | ".join(md_text(c) for c in row) + " |" for row in t.rows)
    if t.note:
        lines += ["", md_text(t.note)]
    return "\n".join(lines) + "\n"


def to_html(t: Table, escape: Callable[[str], str] = html.escape) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return (
        f'<h3>{escape(t.title)}</h3><table class="results"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{note}"
    )
