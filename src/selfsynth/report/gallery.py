"""Report pieces that show single images: test answers with cited concepts highlighted, Z* of training images.

Images are inlined as base64 data URIs (thumbnails), so the report is one file that opens
offline. Only images inside the run's data root (``data.root`` of its config) are embedded: a
samples file naming any other path gets a note in place of the image, so a report never carries
a file from elsewhere on the machine. On the embedded world each cited concept is green when the image shows it and red when
it does not (hallucinated, or another species' concept); elsewhere cited concepts are marked in
one neutral colour, because no public dataset records what each image shows.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SEGMENTS = re.compile(r"([.!?;:,\n]+|\b(?:and|but|with|while|whereas|because)\b)", re.IGNORECASE)


def esc(value: Any) -> str:
    """HTML-escape, and break ``://`` so no text a model wrote turns into a URL in the file."""
    return html.escape(str(value)).replace("://", ":&#47;&#47;")


def image_data_uri(path: str | Path, max_side: int = 224) -> str | None:
    """A thumbnail of ``path`` as a ``data:`` URI, or None when the file is missing or unreadable."""
    from selfsynth.data.checks import decode_image
    from selfsynth.errors import DataError

    try:
        im = decode_image(path)
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        if im.width * im.height <= 96 * 96:
            im.save(buf, format="PNG", optimize=True)
            mime = "image/png"
        else:
            im.save(buf, format="JPEG", quality=85)
            mime = "image/jpeg"
    except (DataError, OSError, ValueError) as e:
        log.debug("no thumbnail for %s: %s", path, e)
        return None
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def data_roots(config: dict[str, Any], run_dir: Path) -> list[Path]:
    """The folders a run's images may be embedded from: its data root (and whatever its format adds).

    A relative root is the first that exists of: under the current folder, then under each folder
    above the run (nearest first), since the report may be written from elsewhere than the run.
    """
    from selfsynth.data.registry import image_roots

    data = config.get("data") if isinstance(config, dict) else None
    root = data.get("root") if isinstance(data, dict) else None
    if not isinstance(root, str) or not root:
        return []
    found = Path(root)
    if not found.is_absolute():
        starts = [Path.cwd(), *Path(run_dir).resolve().parents]
        found = next((s / root for s in starts if (s / root).is_dir()), found)
    return image_roots(str(data.get("format", "")), found)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    from selfsynth.data.checks import resolve_inside
    from selfsynth.errors import DataError

    for base in roots:
        try:
            resolve_inside(base, str(path))
        except DataError:
            continue
        return True
    return False


def _img(path: Any, alt: str, root: Path, allowed: Sequence[Path]) -> str:
    if not isinstance(path, str) or not path:
        return f'<div class="noimg">{esc("image not available")}</div>'
    p = Path(path)
    p = p if p.is_absolute() or p.is_file() else root / p
    if not _inside(p, allowed):
        log.info("not embedding %s: outside the run's data root %s", p, ", ".join(map(str, allowed)))
        return f'<div class="noimg">{esc("image outside the data root: not embedded")}</div>'
    uri = image_data_uri(p)
    if uri is None:
        return f'<div class="noimg">{esc("image not available")}</div>'
    return f'<img src="{uri}" alt="{esc(alt)}">'


def highlight(answer: str, row: dict[str, Any], citer: Callable[[str, list[str]], list[str]]) -> str:
    """The answer as HTML, each clause that cites a concept wrapped in a coloured ``<mark>``."""
    cited = list(row.get("cited") or [])
    bad = set(row.get("hallucinated") or [])
    good = set(row.get("cited_visible") or [])
    known = "cited_visible" in row
    out = []
    for part in _SEGMENTS.split(answer):
        if not part:
            continue
        here = citer(part, cited) if cited and not _SEGMENTS.fullmatch(part) else []
        if not here:
            out.append(esc(part))
            continue
        kind = (
            "bad"
            if any(c in bad for c in here)
            else "good"
            if known and any(c in good for c in here)
            else "cite"
        )
        out.append(f'<mark class="{kind}" title="{esc("; ".join(here))}">{esc(part)}</mark>')
    return "".join(out).replace("://", ":&#47;&#47;")  # a URL split across segments


def chips(row: dict[str, Any]) -> str:
    cited = list(row.get("cited") or [])
    if not cited:
        return ""
    bad = set(row.get("hallucinated") or [])
    known = "cited_visible" in row
    spans = []
    for c in cited:
        kind = "bad" if c in bad else "good" if known else "cite"
        spans.append(f'<span class="chip {kind}">{esc(c)}</span>')
    missed = [v for v in row.get("visible_concepts") or [] if v not in set(cited)]
    extra = f'<div class="missed">{esc("visible, not cited: " + "; ".join(missed))}</div>' if missed else ""
    return f'<div class="chips">{"".join(spans)}</div>{extra}'


def test_cards(
    rows: Sequence[dict[str, Any]],
    root: Path,
    citer: Callable[[str, list[str]], list[str]],
    base_answers: dict[str, str] | None = None,
    *,
    allowed: Sequence[Path] = (),
) -> str:
    """One card per test answer; images are embedded only from inside ``allowed`` (see :func:`data_roots`)."""
    cards = []
    for r in rows:
        pred = r.get("pred")
        ok = r.get("correct_strict", pred == r.get("label"))
        verdict = "✓" if ok else "✗"
        answer = r.get("answer") or ""
        before = (base_answers or {}).get(str(r.get("id")))
        base_html = (
            f"<details><summary>base model</summary><p>{esc(before)}</p></details>"
            if before is not None
            else ""
        )
        scores = []
        if isinstance(r.get("cs"), (int, float)):
            scores.append(f"CS {r['cs']:.2f}")
        if r.get("ee") is not None:
            scores.append(f"EE {r['ee']}")
        if isinstance(r.get("ppl"), (int, float)):
            scores.append(f"ppl {r['ppl']:.1f}")
        cards.append(
            f'<figure class="card {"ok" if ok else "wrong"}">{_img(r.get("image"), str(r.get("id", "")), root, allowed)}'
            f'<figcaption><div class="lab">{verdict} true: <b>{esc(r.get("label", ""))}</b>'
            f" · named: {esc(pred if pred is not None else 'none')}</div>"
            f'<p class="ans">{highlight(answer, r, citer)}</p>{chips(r)}'
            f'<div class="scores">{esc(" · ".join(scores))}</div>{base_html}</figcaption></figure>'
        )
    return f'<div class="gallery">{"".join(cards)}</div>'


def selection_cards(
    rows: Sequence[dict[str, Any]], images: dict[str, str], root: Path, *, allowed: Sequence[Path] = ()
) -> str:
    cards = []
    for r in rows:
        selected = list(r.get("selected") or [])
        scores = r.get("scores") or {}
        items = "".join(
            f"<li>{esc(c)}{esc(f' ({scores[c]:.2f})') if isinstance(scores.get(c), (int, float)) else ''}</li>"
            for c in selected
        )
        dropped = [c for c in scores if c not in set(selected)]
        rest = f'<div class="missed">{esc("not selected: " + "; ".join(dropped))}</div>' if dropped else ""
        rid = str(r.get("id", ""))
        cards.append(
            f'<figure class="card">{_img(images.get(rid), rid, root, allowed)}<figcaption>'
            f'<div class="lab"><b>{esc(r.get("label", ""))}</b> · {esc(rid)}</div>'
            f"<ol>{items}</ol>{rest}</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(cards)}</div>'


def heatmap(conf: dict[str, Any] | None, max_classes: int = 30) -> str:
    """The confusion matrix as an HTML table shaded by row share; large ones keep the most-confused classes."""
    if not conf or not conf.get("counts"):
        return '<p class="note">No confusion matrix for this round.</p>'
    labels, columns = conf["labels"], conf["columns"]
    # Counts are numbers in any file the evaluate stage wrote; anything else must not reach the page.
    counts = [
        [c if isinstance(c, (int, float)) and not isinstance(c, bool) else 0 for c in row]
        for row in conf["counts"]
    ]
    rows = list(range(len(labels)))
    note = ""
    if len(labels) > max_classes:
        errors = [sum(counts[i]) - (counts[i][i] if i < len(counts[i]) else 0) for i in rows]
        rows = sorted(sorted(rows, key=lambda i: -errors[i])[:max_classes])
        note = f"Showing the {max_classes} classes with the most errors out of {len(labels)}; other columns summed."
    keep_cols = [*rows, len(columns) - 1]
    head = "".join(f'<th class="rot"><div>{esc(columns[j])}</div></th>' for j in keep_cols)
    other_head = '<th class="rot"><div>other</div></th>' if note else ""
    body = []
    for i in rows:
        total = sum(counts[i]) or 1
        tds = []
        for j in keep_cols:
            v = counts[i][j]
            alpha = v / total
            cls = ' class="diag"' if j == i else ""
            ink = ";color:#fff" if alpha > 0.55 else ""
            tds.append(f'<td{cls} style="background:rgba(31,119,180,{alpha:.2f}){ink}">{v or ""}</td>')
        if note:
            rest = sum(counts[i]) - sum(counts[i][j] for j in keep_cols)
            tds.append(f"<td>{rest or ''}</td>")
        body.append(f"<tr><th>{esc(labels[i])}</th>{''.join(tds)}</tr>")
    table = (
        f'<table class="confusion"><thead><tr><th>true \\ named</th>{head}{other_head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    return table + (f'<p class="note">{esc(note)}</p>' if note else "")
