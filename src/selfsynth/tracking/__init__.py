"""Experiment tracking: fine-tuning curves, per-round metrics and sample answers sent to TensorBoard,
Weights & Biases, trackio or MLflow (``tracking.report_to``).

One module per backend (``tensorboard_tracker``, ``wandb_tracker``, ``trackio_tracker``,
``mlflow_tracker``), each importing its library only when chosen; ``run_tracker.RunTracker`` is
what the round loop talks to. Only the main rank tracks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selfsynth.config import RunConfig
    from selfsynth.tracking.run_tracker import RunTracker

# backend -> "module:class"; the values ``tracking.report_to`` accepts are these and "none".
_BACKENDS = {
    "tensorboard": "selfsynth.tracking.tensorboard_tracker:TensorBoardTracker",
    "wandb": "selfsynth.tracking.wandb_tracker:WandbTracker",
    "trackio": "selfsynth.tracking.trackio_tracker:TrackioTracker",
    "mlflow": "selfsynth.tracking.mlflow_tracker:MlflowTracker",
}
BACKENDS: tuple[str, ...] = ("none", *_BACKENDS)


def chosen(report_to: list[str]) -> list[str]:
    """The backends named in ``report_to``, in order, once each ("none" names none)."""
    return list(dict.fromkeys(b for b in report_to if b != "none"))


def open_run_tracker(cfg: RunConfig, run_dir: str | Path) -> RunTracker:
    """Start every chosen backend on the main rank; other ranks get a tracker that logs nothing.

    A missing package is a SelfsynthError naming its extra, raised on every rank before any
    backend starts; a backend that cannot start (no W&B key, an unreachable MLflow server) stops
    every rank too, with the main rank's message.
    """
    from selfsynth import distributed
    from selfsynth.errors import SelfsynthError
    from selfsynth.tracking.base import check_installed
    from selfsynth.tracking.run_tracker import RunTracker

    names = chosen(cfg.tracking.report_to)
    check_installed(names)
    tracker = RunTracker(run_dir, samples=cfg.tracking.samples)
    problem = ""
    if names and distributed.is_main():
        try:
            _start(cfg, Path(run_dir), names, tracker)
        except SelfsynthError as e:
            problem = str(e)
    problem = distributed.from_main(problem) if names else ""
    if problem:
        tracker.close(failed=True)
        raise SelfsynthError(problem)
    return tracker


def _start(cfg: RunConfig, run_dir: Path, names: list[str], tracker: RunTracker) -> None:
    from selfsynth.config import to_dict
    from selfsynth.tracking.base import RunInfo

    info = RunInfo(
        run_dir=run_dir,
        name=cfg.name,
        project=cfg.tracking.project,
        config=to_dict(cfg),
        mlflow_uri=cfg.tracking.mlflow_uri,
        ids=tracker.state["ids"],
    )
    for name in names:
        module, _, cls = _BACKENDS[name].partition(":")
        tracker.trackers.append(getattr(importlib.import_module(module), cls)(info))
    tracker.save()  # the run ids, before any stage runs
