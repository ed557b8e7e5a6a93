"""``selfsynth data``: look at a dataset the way a run will read it, and check its concept bank.

``selfsynth data inspect --format cub --root CUB_200_2011 --split test --json`` loads one split
exactly as a run would and prints counts per class and any skipped records, so a broken
download shows up before a GPU is booked. ``selfsynth data validate-concepts`` checks that a
concept file covers every class of a dataset with enough distinct concepts.
``selfsynth data export-reference`` writes a dataset as the reference scripts' JSON lists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfsynth.config import DataConfig


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        required=True,
        help="data format (world, cub, dogs, aircraft, pld, ham10000, "
        "chest_xray, finer, imagefolder, jsonl, csv, hf)",
    )
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument("--label-level", default="variant", help="FGVC-Aircraft: variant | family | manufacturer")
    p.add_argument(
        "--split-file", default="", help='JSON {"train": [...], "test": [...]} (pld, ham10000, imagefolder)'
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="seeded split when there is no official one"
    )
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--skip-bad", action="store_true", help="skip and report bad records instead of stopping")
    p.add_argument("--image-column", default="image", help="hf: the column holding each row's image")
    p.add_argument("--label-column", default="label", help="hf: the column holding each row's class")
    p.add_argument(
        "--train-splits", default="", help="hf: comma-separated splits that make up train (default: by name)"
    )
    p.add_argument(
        "--test-splits", default="", help="hf: comma-separated splits that make up test (default: by name)"
    )
    p.add_argument("--check-images", action="store_true", help="open every image with PIL (slow on big sets)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect a dataset and validate concept files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    ins = dsub.add_parser("inspect", help="load one split and print images, classes and skipped records")
    _add_data_args(ins)
    ins.add_argument("--split", default="train", choices=("train", "test"))
    ins.add_argument(
        "--max-per-class", type=int, default=0, help="cap per class, as a run's max_*_per_class does"
    )
    ins.add_argument("--json", action="store_true", help="one JSON object")
    ins.set_defaults(func=run_inspect)

    val = dsub.add_parser("validate-concepts", help="check a concept file against a dataset's labels")
    _add_data_args(val)
    val.add_argument("--concepts", default="", help="concept JSON (default: the dataset's own concepts.json)")
    val.add_argument("--min-concepts", type=int, default=3)
    val.add_argument("--json", action="store_true", help="one JSON object")
    val.set_defaults(func=run_validate)

    ref = dsub.add_parser(
        "export-reference",
        help="write the dataset as the reference scripts' {name}-train.json / {name}-test.json lists",
    )
    _add_data_args(ref)
    ref.add_argument("--out", required=True, help="folder for the lists")
    ref.add_argument("--name", default="", help="the lists' dataset name (default: the format's name)")
    ref.add_argument(
        "--image-root",
        default="",
        help="img_path is relative to this folder (default: OUT's parent, which the finer format reads)",
    )
    ref.add_argument("--overwrite", action="store_true", help="replace lists already in OUT")
    ref.set_defaults(func=run_export_reference)


def _data_config(args: argparse.Namespace, cap: int = 0) -> DataConfig:
    return DataConfig(
        format=args.format,
        root=args.root,
        label_level=args.label_level,
        split_file=args.split_file,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        skip_bad=args.skip_bad,
        image_column=args.image_column,
        label_column=args.label_column,
        train_splits=[s for s in args.train_splits.split(",") if s],
        test_splits=[s for s in args.test_splits.split(",") if s],
        max_train_per_class=cap,
        max_test_per_class=cap,
    )


def run(args: argparse.Namespace) -> int:
    return int(args.func(args))


def run_inspect(args: argparse.Namespace) -> int:
    from selfsynth.data import load_split

    report = load_split(_data_config(args, args.max_per_class), args.split, check_images=args.check_images)
    summary = report.summary()
    summary["checked_images"] = bool(args.check_images)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    counts = list(summary["per_class"].values())
    print(f"{summary['format']} {summary['split']} split in {summary['root']}")
    print(f"  images   {summary['images']}" + ("  (all opened with PIL)" if args.check_images else ""))
    print(f"  classes  {summary['classes']}  (per class: min {min(counts)}, max {max(counts)})")
    width = max(len(name) for name in summary["per_class"])
    shown = list(summary["per_class"].items())
    for name, n in shown[:20]:
        print(f"    {name:<{width}}  {n}")
    if len(shown) > 20:
        print(f"    ... and {len(shown) - 20} more classes (use --json for all)")
    if report.skipped:
        print(f"  skipped  {len(report.skipped)} bad records:")
        for s in report.skipped[:10]:
            print(f"    {s.reason}")
        if len(report.skipped) > 10:
            print(f"    ... and {len(report.skipped) - 10} more (use --json for all)")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from selfsynth.data import (
        class_names,
        concept_bank_path,
        load_concept_bank,
        load_examples,
        validate_concept_bank,
    )
    from selfsynth.errors import DataError

    cfg = _data_config(args)
    path = Path(args.concepts) if args.concepts else concept_bank_path(cfg)
    if path is None:
        raise DataError(f"no concepts.json in {cfg.root}: pass --concepts FILE")
    bank = load_concept_bank(path)
    labels = class_names(load_examples(cfg, "train") + load_examples(cfg, "test"))
    validate_concept_bank(bank, labels, min_concepts=args.min_concepts, source=path)
    extra = sorted(set(bank) - set(labels))
    concepts = sum(len(bank[label]) for label in labels)
    if args.json:
        print(
            json.dumps(
                {
                    "concepts": str(path),
                    "ok": True,
                    "labels": len(labels),
                    "concepts_total": concepts,
                    "unused_labels": extra,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(
            f"ok: {path} covers all {len(labels)} labels with {concepts} concepts"
            + (f"; {len(extra)} labels in the file are not in the dataset" if extra else "")
        )
    return 0


def run_export_reference(args: argparse.Namespace) -> int:
    from selfsynth.export.formats import dataset_name
    from selfsynth.export.reference import list_paths, write_reference_lists

    name = dataset_name(args.name or args.format)
    counts = write_reference_lists(
        _data_config(args), args.out, name=name, image_root=args.image_root or None, overwrite=args.overwrite
    )
    for split, path in list_paths(Path(args.out), name).items():
        print(f"{path}: {counts[split]} {split} images")
    return 0
