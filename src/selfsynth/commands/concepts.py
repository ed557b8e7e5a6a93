"""``selfsynth concepts fetch``: build a concept bank JSON by asking an expert once per class label.

    selfsynth concepts fetch --source openai --labels-file labels.txt --out bank.json openai.model=gpt-4o-mini
    selfsynth concepts fetch --source hf --format cub --root CUB_200_2011 --out bank.json hf_model=models/qwen

Labels come from a text file (one per line) or a JSON list, or from a dataset (its train and
test classes). Answers are cached in SQLite (default: ``expert.sqlite`` next to ``--out``), so
an interrupted fetch resumes and a rerun costs nothing. Settings are those of the ``concepts``
section of a run config: ``--config run.yaml`` and ``key=value`` overrides (``openai.model=...``
or ``concepts.openai.model=...``). The API key stays in its environment variable.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from selfsynth.experts import SOURCES

    p = sub.add_parser("concepts", help="fetch expert concepts per class into a concept bank")
    csub = p.add_subparsers(dest="concepts_command", metavar="ACTION", required=True)
    f = csub.add_parser("fetch", help="ask the expert (file, openai or hf) for every label; write bank JSON")
    f.add_argument("--source", choices=SOURCES, help="overrides concepts.source")
    f.add_argument("--labels-file", help="labels, one per line (# comments allowed), or a JSON list")
    f.add_argument("--format", help="take the labels from a dataset of this format (with --root)")
    f.add_argument("--root", help="the dataset's folder (with --format)")
    f.add_argument("--out", required=True, help="where to write the bank JSON {label: [concepts]}")
    f.add_argument("--cache", help="SQLite answer cache (default: expert.sqlite next to --out)")
    f.add_argument("--config", help="a run YAML whose 'concepts' section gives the settings")
    f.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="concepts settings, e.g. openai.model=..."
    )
    f.set_defaults(func=run_fetch)


def read_labels_file(path: str | Path) -> list[str]:
    """Labels from a JSON list (or object keys) or a text file, in file order, each once."""
    from selfsynth.errors import DataError
    from selfsynth.io import read_json

    p = Path(path)
    if p.suffix.lower() == ".json":
        data = read_json(p)
        if isinstance(data, dict):
            data = list(data)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise DataError("expected a JSON list of label strings", file=str(p))
        labels = [x.strip() for x in data]
    else:
        if not p.is_file():
            raise DataError("labels file not found", file=str(p))
        lines = p.read_text(encoding="utf-8").splitlines()
        labels = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    labels = list(dict.fromkeys(x for x in labels if x))
    if not labels:
        raise DataError("no labels in the file: put one class label per line", file=str(p))
    return labels


def _concepts_config(args: argparse.Namespace):
    from selfsynth.config import ConceptsConfig, from_dict, merge, parse_overrides, read_yaml

    data = read_yaml(args.config).get("concepts", {}) if args.config else {}
    items = [o.removeprefix("concepts.") for o in args.overrides]  # run-config spelling works too
    data = merge(data or {}, parse_overrides(items))
    if args.source:
        data["source"] = args.source
    return from_dict(ConceptsConfig, data, "concepts")


def _labels(args: argparse.Namespace) -> list[str]:
    from selfsynth.errors import ConfigError

    if args.labels_file and args.format:
        raise ConfigError("pass either --labels-file or --format/--root, not both")
    if args.labels_file:
        return read_labels_file(args.labels_file)
    if not (args.format and args.root):
        raise ConfigError("say which labels to fetch: --labels-file FILE, or --format NAME --root DIR")
    from selfsynth.config import DataConfig
    from selfsynth.data import class_names, load_examples

    cfg = DataConfig(format=args.format, root=args.root)
    return class_names(load_examples(cfg, "train") + load_examples(cfg, "test"))


def run_fetch(args: argparse.Namespace) -> int:
    from selfsynth.data.concept_bank import concept_bank_problems, save_concept_bank
    from selfsynth.experts import make_source

    cfg = _concepts_config(args)
    labels = _labels(args)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out.parent / "expert.sqlite"
    source = make_source(cfg, cache if cfg.source != "file" else None)
    bank = source.concepts(labels, progress=True)
    save_concept_bank(out, bank)
    paid = getattr(source, "requests_made", 0)
    n = sum(len(v) for v in bank.values())
    print(f"wrote {len(bank)} labels, {n} concepts to {out} ({paid} new expert calls; cache {cache})")
    problems = concept_bank_problems(bank, labels, cfg.min_concepts)
    for p in problems:
        print(f"warning: {p}")
    return 1 if problems else 0
