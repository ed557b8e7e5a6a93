"""Grounding of the answers each stage writes: the training pairs of every round and the evaluated answers.

Where are hallucinated concepts born? The same citations are checked at each step of the loop:
Z* itself (``select``), round 1's synthesized training answers (``synthesize``), each later
round's rejection-sampling winners (``sample``) and the evaluated test answers (``evaluate``).
Per stage, micro-averaged over its answers (C_i: the concepts of ANY class that answer i cites):

- ``cited_per_answer`` = sum |C_i| / answers; ``class_precision`` = sum |C_i & Z_y| / sum |C_i|
  (cited concepts that belong to the true class's bank at all)
- ``visible_precision`` / ``visible_recall`` / ``grounded_rate``: against the image's visible
  concepts V_i, as ``metrics.grounding`` defines them (datasets with ``visibility`` only)
- ``zstar_precision`` = sum |C_i & Z*_i| / sum |C_i|, ``zstar_recall`` = sum |C_i & Z*_i| / sum |Z*_i|:
  against the image's selected concepts (training answers only: Z* exists for training images)

Training figures cover the answers the model wrote: the pairs a round trains on minus its
``fallback`` pairs (label-only answers, or round 1's pair reused by ``sample.fallback=synth``),
which are counted apart. Everything here reads what the stages already wrote or returned;
no stage output or fingerprint depends on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfsynth.io import iter_jsonl
from selfsynth.metrics.grounding import Citer, cite_phrases, is_grounded
from selfsynth.records import QA, Example
from selfsynth.text import normalize

log = logging.getLogger(__name__)

# (image id, true label, cited concepts) of one answer
Cited = tuple[str, str, Sequence[str]]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _keys(phrases: Sequence[str]) -> set[str]:
    return {normalize(p) for p in phrases}


def _ref(refs: Mapping[str, Sequence[str]], image_id: str) -> Sequence[str] | None:
    """The image's reference concepts; None where unknown (a row without ``visible_concepts``)."""
    r = refs.get(image_id)
    return r if isinstance(r, (list, tuple)) else None


def _against(items: Sequence[Cited], refs: Mapping[str, Sequence[str]]) -> tuple[int, int, int, int]:
    """(answers with a reference, concepts they cite, of which in the reference, reference sizes)."""
    n = cited = hit = ref = 0
    for image_id, _, c in items:
        r = _ref(refs, image_id)
        if r is None:
            continue
        keys = _keys(r)
        n += 1
        cited += len(c)
        hit += sum(normalize(x) in keys for x in c)
        ref += len(keys)
    return n, cited, hit, ref


def answer_grounding(
    items: Sequence[Cited],
    bank: Mapping[str, Sequence[str]],
    *,
    visible: Mapping[str, Sequence[str]] | None = None,
    selected: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The module docstring's figures for answers whose citations are known.

    ``visible`` and ``selected`` map image ids to concept lists; the visible / Z* figures are
    left out when the mapping is None or empty, and images missing from it are skipped.
    """
    n = len(items)
    n_cited = sum(len(c) for _, _, c in items)
    own = sum(normalize(x) in _keys(bank.get(label, ())) for _, label, c in items for x in c)
    out: dict[str, Any] = {
        "answers": n,
        "cited_per_answer": n_cited / n if n else None,
        "class_precision": _ratio(own, n_cited),
    }
    if visible:
        m, cited, hit, ref = _against(items, visible)
        if m:
            flags = [is_grounded(c, v) for i, _, c in items if (v := _ref(visible, i)) is not None]
            out.update(
                visible_precision=_ratio(hit, cited),
                visible_recall=_ratio(hit, ref),
                grounded_rate=sum(flags) / len(flags),
            )
    if selected:
        m, cited, hit, ref = _against(items, selected)
        if m:
            out.update(zstar_precision=_ratio(hit, cited), zstar_recall=_ratio(hit, ref))
    return out


def _image_id(pair_id: str) -> str:
    """A training pair's id is ``<image id>#<k>`` (synthesize and sample both name them so)."""
    return pair_id.rsplit("#", 1)[0]


@dataclass
class StageGrounding:
    """What the per-stage figures of one run need: the bank, Z*, the training images' V_i, the citer."""

    bank: Mapping[str, Sequence[str]]
    selected: Mapping[str, Sequence[str]]
    visible: Mapping[str, Sequence[str]] | None = None
    citer: Citer | None = None

    @classmethod
    def of(
        cls,
        bank: Mapping[str, Sequence[str]],
        selected: Mapping[str, Sequence[str]],
        train: Sequence[Example],
        *,
        visibility: bool,
        citer: Citer | None,
    ) -> StageGrounding:
        visible = {e.id: e.meta.get("visible_concepts") for e in train} if visibility else None
        return cls(bank, selected, visible, citer)

    @property
    def phrases(self) -> list[str]:
        return list(dict.fromkeys(p for ps in self.bank.values() for p in ps))

    def zstar(self) -> dict[str, Any]:
        """Z* as if it were an answer citing its concepts: how much of it the images really show."""
        items = [(i, "", list(z)) for i, z in self.selected.items()]
        out = answer_grounding(items, self.bank, visible=self.visible)
        out.pop("class_precision", None)  # Z* is drawn from the true class's bank by construction
        return out

    def training(self, pairs: Sequence[QA]) -> dict[str, Any]:
        """Figures of a round's training pairs (round-1 synthesis or the rejection-sampling winners)."""
        t0 = time.time()
        cite = self.citer or cite_phrases
        phrases = self.phrases
        written = [q for q in pairs if q.kind != "fallback"]
        items = [(_image_id(q.id), q.label, cite(q.answer, phrases)) for q in written]
        out = answer_grounding(items, self.bank, visible=self.visible, selected=self.selected)
        out["fallback"] = len(pairs) - len(written)
        log.info("cited the concepts of %d training answers in %.1f s", len(items), time.time() - t0)
        return out

    def evaluated(self, samples: Path) -> dict[str, Any]:
        """Figures of an evaluate stage's ``samples.jsonl`` (its rows carry ``cited`` already)."""
        if not samples.is_file():
            return {}
        cite, phrases = self.citer or cite_phrases, self.phrases
        items: list[Cited] = []
        visible: dict[str, Sequence[str]] = {}
        for _, r in iter_jsonl(samples):
            cited = r.get("cited")
            if not isinstance(cited, list):
                cited = cite(r.get("answer") or "", phrases)
            items.append((str(r["id"]), r["label"], cited))
            if self.visible is not None and isinstance(r.get("visible_concepts"), list):
                visible[str(r["id"])] = r["visible_concepts"]
        return answer_grounding(items, self.bank, visible=visible)

    def fill(
        self, metrics: dict[str, Any], stage_dir: Path, stage: str = "", pairs: Sequence[QA] = ()
    ) -> None:
        """Add ``grounding_by_stage`` to a round's (or, without ``stage``, the base model's) metrics.

        ``{stage: training figures, "evaluate": evaluated figures}``, read from ``stage_dir``
        (``RUN/round_<r>``); also ``grounded_rate`` where an evaluate stage finished before that
        metric existed left it out of its ``metrics.json``.
        """
        by_stage = {stage: self.training(pairs)} if stage else {}
        by_stage["evaluate"] = self.evaluated(stage_dir / "evaluate" / "samples.jsonl")
        metrics["grounding_by_stage"] = by_stage
        if "grounded_rate" in by_stage["evaluate"]:
            metrics.setdefault("grounded_rate", by_stage["evaluate"]["grounded_rate"])
