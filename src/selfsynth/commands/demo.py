"""``selfsynth demo [--out DIR]``: the whole method offline on the embedded world, in minutes on a laptop.

Builds the world into ``DIR/world`` (if missing), the embedded base VLM (if missing; cached outside
DIR because it is shared by every demo), runs ``configs/world.yaml`` with ``method=ours`` into
``DIR/run``, copies the final merged model to ``DIR/final_model`` and the per-round metrics to
``DIR/results.json``. Rerunning resumes: finished stages are skipped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from selfsynth.errors import SelfsynthError

log = logging.getLogger(__name__)


def recipes_dir() -> Path:
    """``configs/`` of the source tree (src layout: two levels above the package)."""
    return Path(__file__).resolve().parents[3] / "configs"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole method on the embedded world (offline, CPU, minutes)")
    p.add_argument(
        "--out", default="demo", help="folder for the world, the run and the final model (default: demo)"
    )
    p.add_argument("--config", default=None, help="recipe (default: configs/world.yaml)")
    p.add_argument(
        "--base-cache", default=None, help="where the base model is cached (default: ~/.cache/selfsynth)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. rounds=2")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfsynth.runs import RunLock

    out = Path(args.out).resolve()
    # Taken first, so a second demo on the same folder stops at once instead of drawing the world twice.
    with RunLock(out / "run"):
        return _demo(args, out)


def _demo(args: argparse.Namespace, out: Path) -> int:
    from selfsynth import pipeline
    from selfsynth.basevlm.build import ensure_base_model
    from selfsynth.commands.run import summary, write_run_files
    from selfsynth.config import load_config
    from selfsynth.data.world import make_world
    from selfsynth.data.world.make import draw_workers
    from selfsynth.io import read_json, write_json
    from selfsynth.report.model_card import write_model_card

    world = out / "world"
    if not (world / "world.json").is_file():
        print(f"building the world in {world} ...", flush=True)
        make_world(world, progress=not args.no_progress, workers=draw_workers(), validation_per_class=20)
    info = read_json(world / "world.json")
    print(f"world: {len(info.get('species', []))} species; difficulty {info.get('difficulty')}", flush=True)
    print("base model: building or loading from cache ...", flush=True)
    base = ensure_base_model(cache_dir=args.base_cache, progress=not args.no_progress)
    print(f"base model: {base}", flush=True)
    config = Path(args.config) if args.config else recipes_dir() / "world.yaml"
    if not config.is_file():
        raise SelfsynthError(
            f"{config}: recipe not found; pass --config configs/world.yaml from the source tree"
        )
    cfg = load_config(config, [f"data.root={world}", f"model.path={base}", "method=ours", *args.overrides])
    run_dir = out / "run"
    write_run_files(run_dir, cfg)
    results = pipeline.run(cfg, run_dir, progress=not args.no_progress)
    final = out / "final_model"
    if results.get("final_model"):
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(results["final_model"], final)
        rl = bool(results.get("rl")) and results["rl"].get("model") == results["final_model"]
        results["final_model"] = str(final)
        if results.get("rounds"):  # the round's card, its code pointing at this folder
            write_model_card(final, results, results["rounds"][-1]["round"], rl=rl)
    write_json(out / "results.json", results)
    print(summary(results))
    print(f"results:     {out / 'results.json'}")
    print(f"final model: {final}")
    print(
        f"try it:      selfsynth chat {final} --image {world}/images/... --question 'What is this bird? Explain why.'"
    )
    return 0
