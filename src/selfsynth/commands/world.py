"""``selfsynth world make|show``: draw the embedded bird world, or summarise one already drawn."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="draw the embedded world of invented bird species (or show one)")
    wsub = p.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    m = wsub.add_parser("make", help="draw a world into a folder")
    m.add_argument("--out", required=True, help="folder to write (new, empty, or an older world)")
    m.add_argument("--species", type=int, default=16, help="number of species (default 16, in groups of 4)")
    m.add_argument("--train-per-class", type=int, default=40, help="training images per species (default 40)")
    m.add_argument("--test-per-class", type=int, default=20, help="test images per species (default 20)")
    m.add_argument(
        "--validation-per-class",
        type=int,
        default=20,
        help="validation images per species, for choosing settings without test (default 20; 0: none)",
    )
    m.add_argument(
        "--species-seed", type=int, default=0, help="decides names, parts and concepts (default 0)"
    )
    m.add_argument("--image-seed", type=int, default=0, help="decides images, captions and VQA (default 0)")
    m.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    m.add_argument(
        "--workers",
        type=int,
        default=None,
        help="drawing processes (default: one per core, at most 8; 0 draws in this process); same files either way",
    )
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=run)
    s = wsub.add_parser("show", help="print the summary of a world folder")
    s.add_argument("dir", help="a folder written by `selfsynth world make`")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfsynth.data.world import make_world, summary
    from selfsynth.data.world.make import draw_workers
    from selfsynth.errors import DataError
    from selfsynth.io import read_json

    if args.world_command == "show":
        path = Path(args.dir) / "world.json"
        if not path.is_file():
            raise DataError(
                "no world.json here; create a world with `selfsynth world make --out DIR`", file=str(path)
            )
        print(summary(read_json(path)))
        return 0
    start = time.perf_counter()
    world = make_world(
        args.out,
        species=args.species,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        validation_per_class=args.validation_per_class,
        species_seed=args.species_seed,
        image_seed=args.image_seed,
        size=args.size,
        progress=not args.no_progress,
        workers=draw_workers() if args.workers is None else args.workers,
    )
    print(summary(world))
    print(f"time         {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0
