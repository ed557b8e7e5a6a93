"""Read one round's training pairs from a run directory, with each image's selected concepts and scores.

A round's pairs are what its fine-tuning trains on: ``round_N/finetune/train.jsonl``, the QA
records of ``synthesize`` (round 1) or ``sample`` (later rounds) shuffled with general pairs
(kind ``general``). A task pair's id is ``<image id>#<question index>``; the image id finds the
image's Z* and their IB scores in ``concepts/selection.jsonl`` (written by ``select``; absent
for ``method=nl|lge``). The rejection-sampling score of a chosen answer is the ``meta.score``
that ``sample`` puts on each accepted pair (``round_N/sample/accepted.jsonl``, copied into
``train.jsonl``): round 1, label fallbacks and ``method=nofilter`` have none.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfsynth.errors import DataError, SelfsynthError
from selfsynth.io import iter_jsonl, read_jsonl
from selfsynth.records import QA

log = logging.getLogger(__name__)
ROUND_DIR = re.compile(r"round_(\d+)")
GENERAL = "general"  # the QA kind of the general (non-domain) pairs of the fine-tuning mix


@dataclass
class Pair:
    """One exported training pair; ``image`` is the absolute path the run read."""

    id: str
    image_id: str
    image: str
    question: str
    answer: str
    label: str
    kind: str
    round: int
    concepts: list[str] = field(default_factory=list)
    concept_scores: list[float | None] = field(default_factory=list)
    rs_score: float | None = None

    def metadata(self) -> dict[str, Any]:
        """Everything but the image and the conversation: the extra keys of every JSON format."""
        return {
            "image_id": self.image_id,
            "label": self.label,
            "kind": self.kind,
            "round": self.round,
            "concepts": list(self.concepts),
            "concept_scores": list(self.concept_scores),
            "rs_score": self.rs_score,
        }


def train_file(run_dir: Path, rnd: int) -> Path:
    return run_dir / f"round_{rnd}" / "finetune" / "train.jsonl"


def rounds_with_pairs(run_dir: Path) -> list[int]:
    """The rounds whose fine-tuning has written its training pairs, in order."""
    found = []
    for d in run_dir.glob("round_*"):
        m = ROUND_DIR.fullmatch(d.name)
        if m and train_file(run_dir, int(m.group(1))).is_file():
            found.append(int(m.group(1)))
    return sorted(found)


def check_run(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise SelfsynthError(f"{run_dir}: no such run directory; pass the --run-dir of a `selfsynth run`")
    if not (run_dir / "config.yaml").is_file() and not any(run_dir.glob("round_*")):
        raise SelfsynthError(
            f"{run_dir} is not a run directory (no config.yaml, no round_N/); "
            "pass the --run-dir of a `selfsynth run`"
        )


def pick_round(run_dir: Path, rnd: int | None) -> int:
    """``rnd`` when it has pairs; by default the last round that has them."""
    check_run(run_dir)
    rounds = rounds_with_pairs(run_dir)
    if not rounds:
        raise SelfsynthError(
            f"{run_dir} has no training pairs yet (no round_N/finetune/train.jsonl); run it, or continue "
            "it with --resume, until a fine-tuning stage has started"
        )
    if rnd is None:
        return rounds[-1]
    if rnd not in rounds:
        have = ", ".join(map(str, rounds))
        raise SelfsynthError(
            f"{run_dir} has no training pairs for round {rnd} ({train_file(run_dir, rnd)} is missing); "
            f"rounds with pairs: {have}; pass --round with one of them"
        )
    return rnd


def run_source(run_dir: Path, rnd: int) -> dict[str, Any]:
    """Where a round's pairs come from, for the dataset card: the run, the round, method and data."""
    cfg: Any = {}
    # An unreadable config only leaves the card without method and data.
    with contextlib.suppress(OSError, yaml.YAMLError):
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    cfg = cfg if isinstance(cfg, dict) else {}
    data = cfg.get("data") or {}
    return {
        "run": run_dir.name,
        "round": rnd,
        "method": cfg.get("method"),
        "data": data.get("format") if isinstance(data, dict) else None,
    }


def image_id(pair_id: str) -> str:
    """The example id of a task pair (``<image id>#<question index>``)."""
    return pair_id.rpartition("#")[0] or pair_id


def _selection(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "concepts" / "selection.jsonl"
    if not path.is_file():
        log.info("%s is absent (method nl or lge): the pairs carry no selected concepts", path)
        return {}
    return {str(r["id"]): r for r in read_jsonl(path)}


def load_pairs(run_dir: str | Path, rnd: int, *, include_general: bool = False) -> list[Pair]:
    """Round ``rnd``'s training pairs in training order; general pairs only with ``include_general``."""
    run_dir = Path(run_dir)
    path = train_file(run_dir, rnd)
    if not (path.parent / "_manifest.json").is_file():
        log.warning("round %d's fine-tuning has not finished: exporting the pairs it is training on", rnd)
    selection = _selection(run_dir)
    out: list[Pair] = []
    for n, row in iter_jsonl(path):
        try:
            qa = QA.from_dict(row)
        except KeyError as e:
            raise DataError(f"not a training pair: no {e.args[0]!r}", file=str(path), line=n) from None
        if qa.kind == GENERAL and not include_general:
            continue
        if not Path(qa.image).is_file():
            raise SelfsynthError(
                f"{path}:{n}: image {qa.image} of pair {qa.id} is not there; the dataset moved since the "
                "run: put it back where the run read it, then export again"
            )
        sel = selection.get(image_id(qa.id), {}) if qa.kind != GENERAL else {}
        concepts = [str(c) for c in sel.get("selected", [])]
        scores = sel.get("scores", {})
        rs = qa.meta.get("score")
        out.append(
            Pair(
                id=qa.id,
                image_id=image_id(qa.id) if qa.kind != GENERAL else "",
                image=str(Path(qa.image).absolute()),
                question=qa.question,
                answer=qa.answer,
                label=qa.label,
                kind=qa.kind,
                round=rnd,
                concepts=concepts,
                concept_scores=[float(scores[c]) if c in scores else None for c in concepts],
                rs_score=None if rs is None else float(rs),
            )
        )
    if not out:
        raise SelfsynthError(
            f"{path} holds no task pairs"
            + ("" if include_general else "; pass --include-general to export the general pairs of its mix")
        )
    return out
