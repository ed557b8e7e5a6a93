"""Line charts as inline SVG written by hand: no plotting library, no fonts or scripts to fetch.

The report must open offline and stay small; a line chart of a few series over a few rounds is
a few dozen SVG elements. The markup has no ``xmlns`` attribute (inline SVG in HTML5 needs none),
so the report contains no URL at all.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]  # (x, y); missing values are simply left out
    color: str = ""
    dashed: bool = False


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / (n - 1)
    return [lo + i * step for i in range(n)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    y_label: str = "",
    x_labels: dict[float, str] | None = None,
    y_range: tuple[float, float] | None = None,
    width: int = 560,
    height: int = 300,
) -> str:
    """An SVG line chart; ``x_labels`` names the x ticks (e.g. ``{0: "Base", 1: "R1"}``)."""
    pts = [p for s in series for p in s.points]
    if not pts:
        return f'<p class="note">{html.escape(title)}: no data yet.</p>'
    xs = sorted({p[0] for p in pts} | set((x_labels or {}).keys()))
    ys = [p[1] for p in pts]
    y0, y1 = y_range if y_range else (min(0.0, min(ys)), max(ys) * 1.05 or 1.0)
    left, right, top, bottom = 56, 150, 30, 42
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = xs[0], xs[-1]

    def sx(x: float) -> float:
        return left + (pw / 2 if x1 == x0 else (x - x0) / (x1 - x0) * pw)

    def sy(y: float) -> float:
        return top + ph - (0.0 if y1 == y0 else (min(max(y, y0), y1) - y0) / (y1 - y0) * ph)

    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" class="title">{html.escape(title)}</text>',
    ]
    for t in _ticks(y0, y1):
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"></line>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for x in xs:
        label = (x_labels or {}).get(x, _fmt(x))
        out.append(
            f'<text x="{sx(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{html.escape(label)}</text>'
        )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"></line>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"></line>')
    if y_label:
        out.append(
            f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
            f'text-anchor="middle">{html.escape(y_label)}</text>'
        )
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        ordered = sorted(s.points)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        if len(ordered) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ordered)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}></polyline>'
            )
        for x, y in ordered:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{html.escape(s.name)}: {_fmt(y)}</title></circle>"
            )
        ly = top + 10 + 18 * i
        lx = left + pw + 12
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}></line>'
        )
        out.append(f'<text x="{lx + 28}" y="{ly + 4}">{html.escape(s.name[:22])}</text>')
    out.append("</svg>")
    return "".join(out)
