"""Write training pairs in the layouts other trainers read, into a fresh output folder.

- ``llava``: ``train.json``, a list of ``{"id", "image", "conversations": [{"from": "human",
  "value": "<image>\\n..."}, {"from": "gpt", "value": ...}]}`` (the LLaVA trainers, with
  ``--image_folder OUT``);
- ``sharegpt``: ``train.json``, a list of ``{"messages": [{"role", "content"}], "images"}`` with
  ``<image>`` in the user turn, and ``dataset_info.json`` declaring it (LLaMA-Factory, with
  ``dataset_dir`` and ``media_dir`` = OUT);
- ``messages``: ``train.jsonl`` of ``{"messages", "images"}`` (ms-swift);
- ``trl``: ``train.jsonl`` of ``{"messages", "images"}`` whose contents are blocks
  ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` (TRL's conversational VLM format);
- ``hf``: a ``datasets`` dataset with the image embedded (``export.hf``).

Every row also carries the pair's metadata (``Pair.metadata``: label, Z*, scores), which those
trainers ignore. Image paths are relative to OUT, or point at copies under ``OUT/images/``. The
folder is built beside OUT and renamed into place at the end, so a failed export leaves nothing
that a second try would refuse.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsynth.errors import SelfsynthError
from selfsynth.export.pairs import Pair
from selfsynth.io import write_json, write_jsonl

log = logging.getLogger(__name__)
IMAGE = "<image>"

# name -> what it is for (``selfsynth export --format``)
FORMATS = {
    "llava": "LLaVA trainers: train.json of {id, image, conversations (human/gpt)}",
    "sharegpt": "LLaMA-Factory: train.json of {messages, images} + its dataset_info.json entry",
    "messages": "ms-swift: train.jsonl of {messages, images}",
    "trl": "TRL: train.jsonl of {messages with image/text content blocks, images}",
    "hf": "Hugging Face datasets: save_to_disk folder (Image feature) + dataset card README.md",
}


@dataclass
class ExportOptions:
    """How to export: the format, the output folder and what goes in."""

    format: str
    out: str
    name: str = ""  # the dataset's name (dataset_info.json key, card title); "" = from the run
    copy_images: bool = False  # copy images under OUT/images/ instead of pointing at the run's
    source: dict[str, Any] = field(default_factory=dict)  # where the pairs come from, for the card


def check_format(name: str) -> None:
    if name in FORMATS:
        return
    close = difflib.get_close_matches(name, list(FORMATS), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise SelfsynthError(f"unknown export format {name!r}{hint}; pass --format {' | '.join(FORMATS)}")


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsynthError(
            f"{out} already exists and is not an empty folder; pass another --out or remove it first"
        )


def dataset_name(text: str) -> str:
    """A name safe as a dataset_info.json key and a file stem."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "selfsynth"


def place_images(pairs: Sequence[Pair], out: Path, staging: Path, copy: bool) -> dict[str, str]:
    """Image path -> how the output names it: relative to ``out``, or a copy under ``images/``."""
    sources = sorted({p.image for p in pairs})
    if not copy:
        return {s: Path(os.path.relpath(s, out)).as_posix() for s in sources}
    # Mirroring the folders below the images' common parent keeps same-named files of two classes apart.
    common = os.path.commonpath([os.path.dirname(s) for s in sources])
    names = {}
    for s in sources:
        rel = Path("images") / os.path.relpath(s, common)
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, staging / rel)
        names[s] = rel.as_posix()
    return names


def llava_row(p: Pair, image: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"{IMAGE}\n{p.question}"},
            {"from": "gpt", "value": p.answer},
        ],
        **p.metadata(),
    }


def messages_row(p: Pair, image: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "messages": [
            {"role": "user", "content": f"{IMAGE}{p.question}"},
            {"role": "assistant", "content": p.answer},
        ],
        "images": [image],
        **p.metadata(),
    }


def trl_row(p: Pair, image: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.question}]},
            {"role": "assistant", "content": [{"type": "text", "text": p.answer}]},
        ],
        "images": [image],
        **p.metadata(),
    }


def sharegpt_info(name: str, file_name: str) -> dict[str, Any]:
    """The dataset_info.json entry that declares ``file_name`` to LLaMA-Factory."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }


Row = Callable[[Pair, str], dict[str, Any]]
# format -> (row builder, file name, JSON lines?)
_FILES: dict[str, tuple[Row, str, bool]] = {
    "llava": (llava_row, "train.json", False),
    "sharegpt": (messages_row, "train.json", False),
    "messages": (messages_row, "train.jsonl", True),
    "trl": (trl_row, "train.jsonl", True),
}


def _write(pairs: Sequence[Pair], out: Path, staging: Path, opts: ExportOptions, name: str) -> Path:
    if opts.format == "hf":
        from selfsynth.export.hf import write_hf

        if opts.copy_images:
            log.info("the hf format embeds the images in the dataset; --copy-images changes nothing")
        write_hf(pairs, staging, name, opts.source)
        return out
    row, file_name, lines = _FILES[opts.format]
    images = place_images(pairs, out, staging, opts.copy_images)
    rows = [row(p, images[p.image]) for p in pairs]
    if lines:
        write_jsonl(staging / file_name, rows)
    else:
        write_json(staging / file_name, rows)
    if opts.format == "sharegpt":
        write_json(staging / "dataset_info.json", sharegpt_info(name, file_name))
    return out / file_name


def export_pairs(pairs: Sequence[Pair], opts: ExportOptions) -> Path:
    """Write ``pairs`` as ``opts.format`` into the folder ``opts.out``; returns the main file written."""
    check_format(opts.format)
    out = Path(opts.out).absolute()
    check_out(out)
    name = dataset_name(opts.name or "selfsynth")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        written = _write(pairs, out, staging, opts, name)
        if out.is_dir():
            out.rmdir()  # an empty folder was asked for; the staged one takes its place
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Path(opts.out) / written.relative_to(out)  # as the user named it
