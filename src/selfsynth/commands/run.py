"""``selfsynth run CONFIG [key=value ...] --run-dir DIR [--resume]``: the self-synthesis loop."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from selfsynth.errors import SelfsynthError

if TYPE_CHECKING:
    from selfsynth.runs import RunLock

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run (or resume) the self-synthesis loop from a recipe",
        description="Run the loop. Settings: defaults < CONFIG < key=value overrides.",
    )
    p.add_argument("config", help="recipe YAML (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. rounds=2 finetune.lr=2e-4")
    p.add_argument("--run-dir", required=True, help="where everything of this run is written")
    p.add_argument("--resume", action="store_true", help="continue an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    from selfsynth.runs import LOCK

    # the lock file alone is no earlier run: a run that failed to start leaves just that
    if run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()) and not resume:
        raise SelfsynthError(
            f"{run_dir} already exists; pass --resume to continue it or choose another --run-dir"
        )


def write_run_files(run_dir: Path, cfg) -> None:
    from selfsynth.commands.env import collect
    from selfsynth.config import to_dict
    from selfsynth.io import atomic_write_text, write_json

    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    write_json(run_dir / "env.json", collect())


def lock_run_dir(run_dir: Path) -> RunLock | None:
    """Rank 0 locks the run directory for the whole job; every rank fails alike when another run holds it.

    The other ranks belong to the same job, so they take no lock of their own; they learn rank
    0's outcome before any rank writes.
    """
    from selfsynth import distributed
    from selfsynth.runs import RunLock

    lock, problem = None, ""
    if distributed.is_main():
        try:
            lock = RunLock(run_dir).acquire()
        except SelfsynthError as e:
            problem = str(e)
    problem = distributed.from_main(problem)
    if problem:
        raise SelfsynthError(problem)
    return lock


def run(args: argparse.Namespace) -> int:
    from selfsynth import distributed, pipeline
    from selfsynth.config import load_config

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir)
    distributed.init(cfg.model.device)
    # Every rank checks the folder before any of them writes into it.
    distributed.barrier()
    check_run_dir(run_dir, args.resume)
    distributed.barrier()
    lock = lock_run_dir(run_dir)
    try:
        if distributed.is_main():
            write_run_files(run_dir, cfg)
        else:
            logging.getLogger().setLevel(logging.WARNING)  # one rank reports progress
        distributed.barrier()
        results = pipeline.run(cfg, run_dir, progress=not args.no_progress and distributed.is_main())
    finally:
        if lock is not None:
            lock.release()
    if not distributed.is_main():
        return 0
    print(summary(results))
    print(f"results: {run_dir / 'results.json'}")
    if results.get("final_model"):
        print(f"final model: {results['final_model']}")
    return 0


def summary(results: dict) -> str:
    lines = [f"{'model':<10} {'substring':>9} {'strict':>7} {'general':>8}"]
    rows = [("base", results.get("base", {}))] + [
        (f"round {r['round']}", r) for r in results.get("rounds", [])
    ]
    if results.get("rl"):  # the optional RL round (rl.enabled)
        rows.append(("rl", results["rl"]))
    for name, m in rows:
        gen = m.get("general_vqa")
        lines.append(
            f"{name:<10} {m.get('acc_substring', 0):>9.3f} {m.get('acc_strict', 0):>7.3f} "
            f"{'-' if gen is None else format(gen, '.3f'):>8}"
        )
    return "\n".join(lines)
