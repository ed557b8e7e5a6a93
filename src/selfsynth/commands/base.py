"""``selfsynth base build|eval``: build (pretrain) the embedded base VLM, and check it on a held-out world."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Settings the command line exposes (the rest keep their defaults; the library takes all of them).
_BUILD_FLAGS = (
    "seed",
    "tower_size",
    "text_steps",
    "text_batch_size",
    "steps",
    "batch_size",
    "lr",
    "species",
    "train_per_class",
    "species_seed",
    "image_seed",
    "hidden_size",
    "layers",
    "heads",
    "vocab_size",
    "describe_targets",
    "attention",
    "probe_readout",
    "probe_scene",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from selfsynth.basevlm.build import SETTING_CHOICES, BaseSettings

    p = sub.add_parser("base", help="build or check the embedded base VLM (tiny LLaVA on the drawn world)")
    verbs = p.add_subparsers(dest="base_command", metavar="VERB")

    b = verbs.add_parser("build", help="pretrain the base VLM into a folder (cached, resumable)")
    b.add_argument("--out", default="", help="output folder (default: the cache, base-<fingerprint>)")
    b.add_argument("--seed", type=int, default=None, help="model init and data order seed (default 0)")
    b.add_argument(
        "--text-steps", type=int, default=None, help="text-only copy-drill steps before the image steps"
    )
    b.add_argument(
        "--text-batch-size", type=int, default=None, help="rows per text-only step (default: --batch-size)"
    )
    b.add_argument("--steps", type=int, default=None, help="pretraining steps on images")
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--lr", type=float, default=None)
    b.add_argument("--species", type=int, default=None, help="species in the pretraining world")
    b.add_argument("--train-per-class", type=int, default=None, help="pretraining images per species")
    b.add_argument("--species-seed", type=int, default=None, help="pretraining world species seed")
    b.add_argument("--image-seed", type=int, default=None, help="pretraining world image seed")
    b.add_argument("--tower-size", type=int, default=None, help="pixels the vision tower sees (default 256)")
    b.add_argument("--hidden-size", type=int, default=None, help="decoder width")
    b.add_argument("--layers", type=int, default=None, help="decoder layers")
    b.add_argument("--heads", type=int, default=None, help="attention heads (must divide --hidden-size)")
    b.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size")
    # choices and named defaults come from the settings, so the help cannot drift from them
    default = BaseSettings()
    b.add_argument(
        "--describe-targets",
        choices=SETTING_CHOICES["describe_targets"],
        default=None,
        help=f"describe-prompt targets: the world's full captions or noun-first clauses "
        f"(default {default.describe_targets})",
    )
    b.add_argument(
        "--attention",
        choices=SETTING_CHOICES["attention"],
        default=None,
        help=f"decoder attention while pretraining (default {default.attention})",
    )
    b.add_argument(
        "--probe-readout",
        choices=SETTING_CHOICES["probe_readout"],
        default=None,
        help="auxiliary part probe: linear heads, or value words in the decoder's embeddings "
        f"(default {default.probe_readout})",
    )
    b.add_argument(
        "--probe-scene",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"the part probe also reads pose, facing and background (default {default.probe_scene})",
    )
    b.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = leave as is)")
    b.add_argument(
        "--force", action="store_true", help="rebuild even if --out holds a build of other settings"
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=run)

    e = verbs.add_parser(
        "eval", help="attribute accuracy, VQA, species naming and variety on a held-out world"
    )
    e.add_argument("--model", required=True, help="a base model folder (from 'base build')")
    e.add_argument("--species", type=int, default=16)
    e.add_argument("--per-class", type=int, default=6, help="held-out test images per species")
    e.add_argument("--species-seed", type=int, default=2001)
    e.add_argument("--image-seed", type=int, default=2002)
    e.add_argument("--samples", type=int, default=2, help="T=1.0 samples per (image, prompt)")
    e.add_argument("--json", default="", help="also write every figure (and example answers) to this file")
    e.set_defaults(func=run)
    p.set_defaults(func=run)


def _build(args: argparse.Namespace) -> int:
    from selfsynth.basevlm.build import build_base_model, default_cache_root, settings_from

    overrides = {k: getattr(args, k) for k in _BUILD_FLAGS if getattr(args, k) is not None}
    settings = settings_from(**overrides)
    out = Path(args.out) if args.out else default_cache_root() / f"base-{settings.fingerprint()}"
    manifest = build_base_model(
        out, settings, force=args.force, threads=args.threads, progress=not args.no_progress
    )
    print(f"base model: {out}")
    print(
        f"fingerprint {manifest['fingerprint']}; {manifest['parameters']:,} parameters "
        f"({manifest['trainable_parameters']:,} trained); built in {manifest['seconds']:.0f} s"
    )
    if manifest.get("loss_last") is not None:
        print(f"pretraining loss {manifest['loss_first']:.3f} -> {manifest['loss_last']:.3f}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from selfsynth.basevlm.evaluate import evaluate_base, format_report
    from selfsynth.io import write_json
    from selfsynth.models.model_dir import check_model_dir

    check_model_dir(args.model)
    res = evaluate_base(
        args.model,
        species=args.species,
        per_class=args.per_class,
        species_seed=args.species_seed,
        image_seed=args.image_seed,
        samples=args.samples,
    )
    print(format_report(res))
    if args.json:
        write_json(args.json, res)
    for ex in res["examples"][:3]:
        print(json.dumps(ex, ensure_ascii=False))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.base_command == "build":
        return _build(args)
    if args.base_command == "eval":
        return _eval(args)
    print("usage: selfsynth base {build,eval} ...  (see selfsynth base build --help)")
    return 2
