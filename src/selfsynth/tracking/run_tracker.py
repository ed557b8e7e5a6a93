"""What the round loop reports to the chosen trackers, once per stage result, across resumes.

The loop calls four things: ``train_logger(r)`` (the fine-tuning loop calls it after every
optimizer step), ``finetune_done(r)``, ``evaluated(name, step, metrics)`` and ``close()``.
``RUN/tracking/state.json`` remembers, per backend, which stage results it has received, by the
stage's fingerprint; so a resumed run sends each curve, metric and table once, a redone stage
(new settings, new fingerprint) sends its new values, and a backend added on resume receives
what the finished stages wrote from their files (``train_log.jsonl``, ``metrics.json``,
``samples.jsonl``). A backend that fails while logging is dropped with a warning: tracking
never stops a run, and nothing of it enters a stage fingerprint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from selfsynth.io import read_json, write_json
from selfsynth.runs import stage_fingerprint
from selfsynth.tracking.base import Tracker

log = logging.getLogger(__name__)
TRAIN_KEYS = ("loss", "lr", "grad_norm")  # of each train_log.jsonl row; "step" is the x axis
EVAL_AXIS = "eval/round"  # base = 0, round r = r
TABLE_FIELDS = ("id", "label", "pred", "correct_strict", "answer", "cited", "hallucinated")


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric top-level values of a metrics dict (no per-class tables, no strings, no bools)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def answer_table(rows: Sequence[Mapping[str, Any]], k: int) -> tuple[list[str], list[list[Any]]]:
    """``k`` answers spread over the id-sorted rows, with the concepts each cites (and, where
    the data knows what each image shows, those it cites wrongly)."""
    items = sorted(rows, key=lambda r: str(r.get("id")))
    if 0 < k < len(items):
        step = len(items) / k
        items = [items[int(i * step)] for i in range(k)]
    columns = [c for c in TABLE_FIELDS if any(c in r for r in items)]

    def cell(v: Any) -> Any:
        return "; ".join(map(str, v)) if isinstance(v, list) else v

    return columns, [[cell(r.get(c)) for c in columns] for r in items]


def _rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it is missing), skipping a line a kill cut short."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunTracker:
    """The trackers of one run (none on ranks other than the main one)."""

    def __init__(self, run_dir: str | Path, trackers: Sequence[Tracker] = (), *, samples: int = 16) -> None:
        self.run_dir = Path(run_dir)
        self.trackers = list(trackers)
        self.samples = samples
        self.state_path = self.run_dir / "tracking" / "state.json"
        self.state: dict[str, Any] = {"ids": {}, "logged": {}}
        if self.state_path.is_file():
            try:
                self.state.update(read_json(self.state_path))
            except Exception as e:  # a broken state file costs repeated points, never the run
                log.warning("tracking: ignoring %s (%s)", self.state_path, e)
        # round -> backends that skip its steps; a round is here once this process trains it
        self._live: dict[int, set[str]] = {}

    @property
    def active(self) -> bool:
        return bool(self.trackers)

    def _logged(self, tracker: Tracker) -> dict[str, str]:
        return self.state["logged"].setdefault(tracker.name, {})

    def save(self) -> None:
        try:
            write_json(self.state_path, self.state)
        except OSError as e:
            log.warning("tracking: could not save %s (%s)", self.state_path, e)

    def _each(self, what: str, fn: Callable[[Tracker], None]) -> None:
        for t in list(self.trackers):
            try:
                fn(t)
            except Exception as e:
                log.warning(
                    "tracking: %s failed in %s (%s); no more logging to it in this run", t.name, what, e
                )
                self.trackers.remove(t)

    def _train(self, t: Tracker, rnd: int, rows: Sequence[Mapping[str, Any]]) -> None:
        axis = f"train/round_{rnd}/step"
        for row in rows:
            values = {f"train/round_{rnd}/{k}": row[k] for k in TRAIN_KEYS if row.get(k) is not None}
            t.log_metrics(values, step=int(row["step"]), axis=axis)

    def train_logger(self, rnd: int) -> Callable[[dict[str, Any]], None] | None:
        """The per-step callback for round ``rnd``'s fine-tuning (None when nothing is tracked)."""
        if not self.trackers:
            return None
        return lambda row: self._step(rnd, row)

    def _step(self, rnd: int, row: dict[str, Any]) -> None:
        key = f"round_{rnd}/finetune"
        if rnd not in self._live:
            self._live[rnd] = set()
            fp = stage_fingerprint(self.run_dir, key) or ""
            log_file = self.run_dir / key / "train_log.jsonl"

            def start(t: Tracker) -> None:
                if self._logged(t).get(key) == fp:  # retrained with the same settings: sent already
                    self._live[rnd].add(t.name)
                    return
                # A run resumed from a checkpoint starts past step 1: a backend that never saw
                # this training gets the earlier steps first, so every curve stays in step order.
                if int(row["step"]) > 1 and self._logged(t).get(key + "#started") != fp:
                    self._train(t, rnd, [r for r in _rows(log_file) if r["step"] < row["step"]])
                self._logged(t)[key + "#started"] = fp

            self._each("training", start)
            self.save()
        skip = self._live[rnd]
        self._each("training", lambda t: None if t.name in skip else self._train(t, rnd, [row]))

    def finetune_done(self, rnd: int) -> None:
        """Round ``rnd``'s fine-tuning is finished (now, or in an earlier process)."""
        key = f"round_{rnd}/finetune"
        fp = stage_fingerprint(self.run_dir, key)
        if not self.trackers or fp is None:
            return

        def done(t: Tracker) -> None:
            if self._logged(t).get(key) == fp:
                return
            if rnd not in self._live:  # trained before this process: send the whole curve
                self._train(t, rnd, _rows(self.run_dir / key / "train_log.jsonl"))
            self._logged(t)[key] = fp

        self._each("training", done)
        self.save()

    def evaluated(self, name: str, step: int, metrics: Mapping[str, Any]) -> None:
        """Stage ``name/evaluate`` gave ``metrics``: its scalars at ``step``, and a table of answers."""
        key = f"{name}/evaluate"
        fp = stage_fingerprint(self.run_dir, key)
        if fp is None or all(self._logged(t).get(key) == fp for t in self.trackers):
            return  # also when nothing is tracked: then samples.jsonl is not even read
        samples = self.run_dir / key / "samples.jsonl"
        columns, rows = answer_table(_rows(samples), self.samples)
        values = {f"eval/{k}": v for k, v in scalars(metrics).items()}

        def send(t: Tracker) -> None:
            if self._logged(t).get(key) == fp:
                return
            t.log_metrics(values, step=step, axis=EVAL_AXIS)
            if rows:
                t.log_table(f"answers/{name}", columns, rows, step=step, axis=EVAL_AXIS)
            self._logged(t)[key] = fp

        self._each("evaluation", send)
        self.save()

    def close(self, failed: bool = False) -> None:
        self._each("close", lambda t: t.close(failed))
        self.trackers = []
