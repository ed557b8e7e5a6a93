"""Reading the ``<id> <value>`` text files that CUB and FGVC-Aircraft ship as their indexes.

Every line is checked (column count, integer fields, duplicate ids) and a bad one is a DataError
naming the file and line, which ``skip_bad`` can skip like any other bad record.
"""

from __future__ import annotations

from pathlib import Path

from selfsynth.data.checks import Problems
from selfsynth.errors import DataError


def read_keyed_lines(
    path: Path,
    problems: Problems,
    *,
    int_key: bool = True,
    int_value: bool = False,
    rest: bool = False,
    columns: str = "<id> <value>",
) -> dict[str, tuple[str, int]]:
    """Map each line's first field to ``(value, line_number)``.

    ``rest`` keeps everything after the first space as the value (labels with spaces), otherwise a
    line must have exactly two fields. Integer fields are checked but kept as written.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=str(path)) from None
    out: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        with problems.item():
            key, value = _parse(
                line, path, n, int_key=int_key, int_value=int_value, rest=rest, columns=columns
            )
            if key in out:
                raise DataError(f"duplicate id {key} (first on line {out[key][1]})", file=str(path), line=n)
            out[key] = (value, n)
    return out


def _parse(
    line: str, path: Path, n: int, *, int_key: bool, int_value: bool, rest: bool, columns: str
) -> tuple[str, str]:
    fields = line.strip().split(None, 1) if rest else line.split()
    if len(fields) != 2:
        raise DataError(f"expected '{columns}', got {line.strip()!r}", file=str(path), line=n)
    key, value = fields[0], fields[1].strip()
    if int_key:
        key = _int(key, "id", path, n)
    if int_value:
        value = _int(value, "value", path, n)
    return key, value


def _int(text: str, what: str, path: Path, n: int) -> str:
    """Check for a non-negative integer but keep its text (FGVC ids have leading zeros: 0034309)."""
    if not (text.isascii() and text.isdigit()):
        raise DataError(f"{what} {text!r} is not an integer", file=str(path), line=n)
    return text
