"""Ours, NL and L+GE on several world seeds: mean +- std per method, so a figure is not one lucky draw.

Each seed draws its own world (species and images from that seed, plus a validation split), and
every method runs the world recipe on it with the embedded base (built first if missing, then
cached). Runs resume: rerun the same command after a stop. The table goes to stdout and to
``OUT/seeds.md``; the per-run figures to ``OUT/seeds.json``.

    .venv/bin/python bench/seeds.py --out seeds                      # seeds 1 2 3, test split
    .venv/bin/python bench/seeds.py --out seeds --split validation   # for choosing settings
    .venv/bin/python bench/seeds.py --out seeds --seeds 1 --methods ours nl rounds=2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("seeds")
ROOT = Path(__file__).resolve().parents[1]
METHOD_NAMES = {"ours": "ours", "nl": "NL", "lge": "L+GE", "nofilter": "no filter"}


def final_metrics(results: dict[str, Any]) -> dict[str, Any]:
    last = results["rounds"][-1]
    return {
        "rounds": len(results["rounds"]),
        "acc_substring": last["acc_substring"],
        "acc_strict": last["acc_strict"],
        "general_vqa": last.get("general_vqa"),
        "ground_precision": last.get("ground_precision"),
        "ground_recall": last.get("ground_recall"),
        "base_general_vqa": results.get("base", {}).get("general_vqa"),
        "seconds": results.get("seconds"),
    }


def _pct(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def table(runs: dict[str, dict[int, dict[str, Any]]], split: str) -> str:
    seeds = sorted({s for per in runs.values() for s in per})
    head = f"| method ({split}, final round) | substring % | strict % | " + " | ".join(
        f"seed {s}" for s in seeds
    )
    lines = [head + " |", "|---|---:|---:|" + "---:|" * len(seeds)]
    for method, per in runs.items():
        sub = [per[s]["acc_substring"] for s in seeds if s in per]
        strict = [per[s]["acc_strict"] for s in seeds if s in per]
        cells = [f"{100 * per[s]['acc_substring']:.1f}" if s in per else "-" for s in seeds]
        lines.append(
            f"| {METHOD_NAMES.get(method, method)} | {_pct(sub)} | {_pct(strict)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the worlds, runs and tables")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="world seeds (default 1 2 3)")
    p.add_argument("--methods", nargs="+", default=["ours", "nl", "lge"])
    p.add_argument("--split", default="test", choices=("test", "validation"), help="the split scored")
    p.add_argument("--config", default=str(ROOT / "configs" / "world.yaml"))
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for every run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from selfsynth.basevlm.build import ensure_base_model
    from selfsynth.data.world import make_world
    from selfsynth.data.world.make import draw_workers

    out = Path(args.out).resolve()
    base = ensure_base_model()
    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in args.methods}
    for seed in args.seeds:
        world = out / f"seed_{seed}" / "world"
        if not (world / "world.json").is_file():
            make_world(
                world, species_seed=seed, image_seed=seed, validation_per_class=20, workers=draw_workers()
            )
        for method in args.methods:
            run_dir = out / f"seed_{seed}" / f"{method}_{args.split}"
            overrides = [
                f"data.root={world}",
                f"model.path={base}",
                f"method={method}",
                f"evaluate.split={args.split}",
            ]
            cmd = [sys.executable, "-m", "selfsynth", "run", args.config, *overrides, *args.overrides]
            cmd += ["--run-dir", str(run_dir), "--no-progress"]
            if (run_dir / "config.yaml").is_file():
                cmd.append("--resume")
            log.info("seed %d, %s: %s", seed, method, run_dir)
            subprocess.run(cmd, check=True)
            results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
            runs[method][seed] = final_metrics(results)
            log.info("seed %d, %s: %s", seed, method, runs[method][seed])
    text = table(runs, args.split)
    print(text)
    (out / "seeds.md").write_text(text + "\n", encoding="utf-8")
    (out / "seeds.json").write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
