"""General ability: score a VLM on a multiple-choice benchmark in the VLMEvalKit TSV layout.

MMStar, MMBench and SEED-Bench ship as TSV files with columns ``index``, ``question``, option
columns ``A``, ``B``, ... (some empty), ``answer`` (a letter), ``image`` (base64) and optional
``hint`` and ``category``. MMBench stores each image once: a later row's ``image`` may hold the
``index`` of the row that carries it. Each item becomes ``[Hint: ...]`` + question + lettered
options + "Answer with the option's letter."; the model answers greedily and
``selfsynth.metrics.choice.read_choice`` reads its choice (the stated letter; without one, the one
option whose text the answer states). Accuracy = correct / items, overall and per category.

The paper's own numbers come from lmms-eval; ``lmms_eval_command`` prints that command for a
merged model, so the two can be compared.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from PIL import Image

from selfsynth.errors import DataError
from selfsynth.metrics.choice import answer_choices, choice_accuracy
from selfsynth.prompts import vqa_prompt

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
REQUIRED = ("index", "question", "answer", "image")
_MISSING = {"", "nan", "none", "null"}
# The paper's general-ability set, as lmms-eval task names.
PAPER_TASKS = ("mmstar", "mme", "mmbench_en_dev", "seedbench_2_plus", "mmmu_val")


@dataclass
class MCItem:
    index: str
    line: int
    question: str
    options: dict[str, str]
    answer: str
    image: bytes
    hint: str = ""
    category: str = ""

    @property
    def prompt(self) -> str:
        q = f"Hint: {self.hint}\n{self.question}" if self.hint else self.question
        return vqa_prompt(q, self.options)

    def pil(self) -> Image.Image:
        with Image.open(io.BytesIO(self.image)) as im:
            return im.convert("RGB")


def _present(value: str | None) -> str:
    v = (value or "").strip()
    return "" if v.lower() in _MISSING else v


def _decode_image(value: str, where: str) -> bytes:
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DataError(
            f"{where}: 'image' is not valid base64; the TSV must embed each image as base64"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception:  # PIL raises many types for garbage bytes
        raise DataError(f"{where}: 'image' decodes from base64 but is not a readable image") from None
    return data


def read_tsv(path: str | Path, limit: int = 0) -> list[MCItem]:
    """Items of a VLMEvalKit-style TSV; any bad row is a DataError naming its index and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", file=str(p))
    csv.field_size_limit(2**31 - 1)  # base64 images are far longer than csv's 128 KiB default
    try:
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise DataError(
                    f"missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                    "expected the VLMEvalKit TSV layout: index, question, A, B, ..., answer, image",
                    file=str(p),
                )
            # DictReader files surplus fields under the key None and fills missing ones with None.
            raw = [
                (reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}, None in row)
                for row in reader
            ]
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=str(p)) from None
    except csv.Error as e:
        raise DataError(f"not a readable TSV ({e})", file=str(p)) from None
    by_index = {_present(r.get("index")): r for _, r, _ in raw}
    letters = [c for c in LETTERS if c in columns]
    items: list[MCItem] = []
    for line, row, surplus in raw:
        if limit and len(items) >= limit:
            break
        index = _present(row.get("index"))
        where = f"{p}: row index {index or '?'} (line {line})"
        if surplus or any(v is None for v in row.values()):
            raise DataError(f"{where}: wrong number of tab-separated fields")
        if not index:
            raise DataError(f"{where}: empty 'index'")
        question = _present(row.get("question"))
        if not question:
            raise DataError(f"{where}: empty 'question'")
        options = {c: _present(row.get(c)) for c in letters if _present(row.get(c))}
        if len(options) < 2:
            raise DataError(f"{where}: fewer than two options in columns {', '.join(letters) or 'A, B, ...'}")
        answer = _present(row.get("answer")).upper()
        if answer not in options:
            raise DataError(
                f"{where}: answer {answer or '(empty)'!r} is not one of the options {', '.join(options)}"
            )
        image = _present(row.get("image"))
        if image.isdigit() and len(image) < 16 and image in by_index and image != index:
            image = _present(by_index[image].get("image"))  # MMBench: a reference to another row's image
        if not image:
            raise DataError(f"{where}: empty 'image'")
        items.append(
            MCItem(
                index=index,
                line=line,
                question=question,
                options=options,
                answer=answer,
                image=_decode_image(image, where),
                hint=_present(row.get("hint")),
                category=_present(row.get("category")),
            )
        )
    if not items:
        raise DataError("no items", file=str(p))
    return items


def evaluate_items(
    vlm: Any,
    items: Sequence[MCItem],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Greedy answers for ``items`` from ``vlm`` (anything with ``.generate``); (summary, per-item rows)."""
    choices = answer_choices(
        vlm,
        items,
        image_for=MCItem.pil,
        prompt_for=attrgetter("prompt"),
        options_for=attrgetter("options"),
        answer_for=attrgetter("answer"),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        chunk_size=max(batch_size, 1)
        * 4,  # a few batches per call: the progress bar moves, images decode lazily
        progress=progress,
        desc="general",
    )
    rows = [
        {
            "index": it.index,
            "category": it.category,
            "answer": it.answer,
            "output": c.text,
            "pred": c.pred,
            "correct": c.correct,
        }
        for it, c in zip(items, choices, strict=True)
    ]
    return summarize(rows), rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    cats: dict[str, list[bool]] = {}
    for r in rows:
        cats.setdefault(r["category"] or "(none)", []).append(r["correct"])
    return {
        "n": n,
        "accuracy": choice_accuracy([r["correct"] for r in rows]),
        "unparsed": sum(r["pred"] is None for r in rows),
        "per_category": {c: {"n": len(v), "accuracy": choice_accuracy(v)} for c, v in sorted(cats.items())},
    }


def lmms_eval_command(
    model: str,
    tasks: Sequence[str] = PAPER_TASKS,
    *,
    output_path: str = "lmms_eval_out",
    num_processes: int = 1,
    batch_size: int = 1,
) -> str:
    """The lmms-eval command line that scores a merged LLaVA-style model on the paper's benchmarks."""
    return (
        f"accelerate launch --num_processes={num_processes} -m lmms_eval --model llava_hf "
        f"--model_args {shlex.quote('pretrained=' + model)} --tasks {','.join(tasks)} "
        f"--batch_size {batch_size} --log_samples --output_path {shlex.quote(output_path)}"
    )
