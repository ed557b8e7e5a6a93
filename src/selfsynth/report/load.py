"""Read what a run directory holds for the report: results, per-round metrics, samples, Z*, image paths.

Nothing here runs a model: the report re-reads what the stages wrote, so regenerating it costs
seconds. ``evaluate/metrics.json`` wins over the copy in ``results.json`` (it is written by the
stage itself); rounds that have finished their evaluation but are not in ``results.json`` yet (a
run still going) are picked up too.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsynth.data.registry import Capabilities, get_capabilities
from selfsynth.errors import ConfigError, SelfsynthError
from selfsynth.io import iter_jsonl, read_json

log = logging.getLogger(__name__)

METHOD_NAMES = {"base": "Base", "nl": "NL", "lge": "L+GE", "ours": "Ours", "nofilter": "No filtering"}
METHOD_ORDER = ("base", "nl", "lge", "ours", "nofilter")
_ROUND_DIR = re.compile(r"^round_(\d+)$")


@dataclass
class RunData:
    """One run as the report sees it; ``rounds`` are metric dicts with a ``round`` key, in order."""

    dir: Path
    name: str
    method: str
    config: dict[str, Any]
    base: dict[str, Any] | None
    rounds: list[dict[str, Any]]
    seconds: float | None = None
    final_model: str | None = None
    general: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # records data.skip_bad left out
    zstar_grounding: dict[str, Any] | None = None  # Z* against the visible concepts (metrics.stage_grounding)
    rl: dict[str, Any] | None = None  # the optional RL round's metrics (rl.enabled), after the last round

    @property
    def method_name(self) -> str:
        return METHOD_NAMES.get(self.method, self.method)

    @property
    def final(self) -> dict[str, Any] | None:
        return self.rounds[-1] if self.rounds else None

    @property
    def data_format(self) -> str:
        return str((self.config.get("data") or {}).get("format", ""))

    @property
    def capabilities(self) -> Capabilities:
        """What the run's data format offers; nothing for a format unknown here (a plugin not loaded)."""
        try:
            return get_capabilities(self.data_format)
        except ConfigError:
            return Capabilities()

    def stage_dir(self, rnd: int | None) -> Path:
        return self.dir / ("base" if not rnd else f"round_{rnd}") / "evaluate"

    def samples(self, rnd: int | None) -> list[dict[str, Any]]:
        path = self.stage_dir(rnd) / "samples.jsonl"
        return [r for _, r in iter_jsonl(path)] if path.is_file() else []


def _metrics_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except SelfsynthError as e:
        log.warning("skipping unreadable %s (%s)", path, e)
        return None
    return data if isinstance(data, dict) else None


def load_run(run_dir: str | Path) -> RunData:
    """A run's results and metrics; a folder with neither ``results.json`` nor any evaluation is an error."""
    root = Path(run_dir)
    if not root.is_dir():
        raise SelfsynthError(f"{root}: no such run directory")
    results = _metrics_file(root / "results.json") or {}
    base = dict(results.get("base") or {})
    base.update(_metrics_file(root / "base" / "evaluate" / "metrics.json") or {})
    rounds: dict[int, dict[str, Any]] = {}
    for r in results.get("rounds") or []:
        if isinstance(r, dict) and isinstance(r.get("round"), int):
            rounds[r["round"]] = dict(r)
    for d in root.iterdir():
        m = _ROUND_DIR.match(d.name)
        if m and d.is_dir():
            found = _metrics_file(d / "evaluate" / "metrics.json")
            if found is not None:
                rnd = int(m.group(1))
                rounds[rnd] = {**rounds.get(rnd, {}), **found, "round": rnd}
    if not results and not base and not rounds:
        raise SelfsynthError(
            f"{root}: no results.json and no evaluate/metrics.json: is this a run directory? "
            "(create one with `selfsynth run` or `selfsynth demo`)"
        )
    config = results.get("config") or _config_yaml(root)
    general = []
    for f in sorted((root / "general").glob("*.json")) if (root / "general").is_dir() else []:
        g = _metrics_file(f)
        if g is not None and "accuracy" in g:
            general.append({"name": g.get("name", f.stem), **{k: v for k, v in g.items() if k != "items"}})
    run = RunData(
        dir=root,
        name=str(results.get("name") or config.get("name") or root.name),
        method=str(results.get("method") or config.get("method") or "ours"),
        config=config,
        base=base or None,
        rounds=[rounds[k] for k in sorted(rounds)],
        # the stages' own seconds: an invocation that resumed a finished run took only its last part
        seconds=results.get("stage_seconds", results.get("seconds")),
        final_model=results.get("final_model"),
        general=general,
        skipped=list(results.get("data_skipped") or []),
        zstar_grounding=results.get("zstar_grounding") or None,
        rl={k: v for k, v in results["rl"].items() if k != "training"}
        if isinstance(results.get("rl"), dict)
        else None,
    )
    _fill_grounded_rate(run)
    return run


def _fill_grounded_rate(run: RunData) -> None:
    """``grounded_rate`` from ``samples.jsonl`` where an evaluation finished before the metric existed.

    Its rows already carry ``cited`` and ``visible_concepts``, so this re-cites nothing.
    """
    if not run.capabilities.visibility:
        return
    from selfsynth.metrics.grounding import grounded_rate

    for m in ([run.base] if run.base else []) + run.rounds:
        if "grounded_rate" not in m:
            rate = grounded_rate(run.samples(m.get("round")))
            if rate is not None:
                m["grounded_rate"] = rate


def _config_yaml(root: Path) -> dict[str, Any]:
    path = root / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def load_bank(run: RunData) -> dict[str, list[str]]:
    data = _metrics_file(run.dir / "concepts" / "concepts.json") or {}
    return {str(k): [str(p) for p in v] for k, v in data.items() if isinstance(v, list)}


def load_selection(run: RunData, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of ``concepts/selection.jsonl``, evenly spread over the file."""
    path = run.dir / "concepts" / "selection.jsonl"
    if not path.is_file():
        return []
    rows = [r for _, r in iter_jsonl(path)]
    return spread(rows, limit)


def spread(items: list[Any], k: int) -> list[Any]:
    """``k`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if k <= 0 or len(items) <= k:
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def train_images(run: RunData, ids: set[str]) -> dict[str, str]:
    """Image paths of training ids, from files the run already wrote (no dataset loading).

    Looks at the selection rows themselves, then the round-1 and sampling pair files (their ids
    are ``<image id>#<k>``), then the world's ``train.jsonl``.
    """
    found: dict[str, str] = {}

    def scan(path: Path, base: Path | None = None) -> None:
        for _, r in iter_jsonl(path):
            rid = str(r.get("id", "")).split("#")[0]
            if rid in ids and rid not in found and isinstance(r.get("image"), str):
                img = Path(r["image"])
                found[rid] = str(base / img if base is not None and not img.is_absolute() else img)
            if len(found) == len(ids):
                return

    files = [run.dir / "concepts" / "selection.jsonl"]
    for stage in ("round_1/synthesize", "round_2/sample"):
        d = run.dir / stage
        if d.is_dir():
            files.extend(sorted(d.glob("*.jsonl")))
    root = (run.config.get("data") or {}).get("root")
    for f in files:
        if len(found) < len(ids) and f.is_file():
            try:
                scan(f)
            except (SelfsynthError, json.JSONDecodeError, OSError) as e:
                log.debug("cannot scan %s for image paths: %s", f, e)
    manifest = run.capabilities.train_manifest
    if len(found) < len(ids) and manifest and root and (Path(root) / manifest).is_file():
        scan(Path(root) / manifest, Path(root))
    return found
