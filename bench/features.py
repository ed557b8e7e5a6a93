"""Benchmark the frozen-tower feature cache on a 3-round pipeline's worth of image encodings.

Every stage shows the vision tower the same images again: describe (prompts x samples), synthesize
(questions), LoRA epochs, rejection sampling (questions x samples), evaluation, and each round
starts from a freshly loaded (merged) model. The script runs that schedule, scaled down, once
with the feature cache (in memory + the on-disk store that carries features across rounds) and
once without, and prints the tower encodings and the times of both.

    .venv/bin/python bench/features.py                 # a random tiny LLaVA (144 image tokens)
    .venv/bin/python bench/features.py --model DIR     # any local image-text-to-text model

Training runs without augmentation here: augmented pixels are new images and always miss.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests", "unit"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from tiny_models import build_llava, make_images  # noqa: E402

from selfsynth.config import FinetuneConfig  # noqa: E402
from selfsynth.models.features import find_tower  # noqa: E402
from selfsynth.models.vlm import VLM  # noqa: E402
from selfsynth.records import QA  # noqa: E402

QUESTIONS = ["what is the name of this bird ?", "describe the image .", "explain why .", "what is this ?"]


def run_pipeline(
    path: str, train: list[str], test: list[str], args: argparse.Namespace, cache_dir: Path | None
) -> dict[str, float]:
    """The image-encoding schedule of ``args.rounds`` rounds; returns seconds and tower image counts."""
    requested = encoded = 0
    tower_s = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=16)
    for rnd in range(1, args.rounds + 1):
        vlm = VLM.load(path, feature_cache=cache_dir is not None, feature_cache_dir=cache_dir)
        counter, clock = [0], [0.0, 0.0]  # images asked for; [start of this call, tower seconds]

        def before(module, args_, kwargs, counter=counter, clock=clock):
            counter[0] += (args_[0] if args_ else kwargs["pixel_values"]).shape[0]
            clock[0] = time.process_time()

        def after(module, args_, kwargs, output, clock=clock):
            clock[1] += time.process_time() - clock[0]

        tower = find_tower(vlm.model)[1]
        hooks = [
            tower.register_forward_pre_hook(before, with_kwargs=True),
            tower.register_forward_hook(after, with_kwargs=True),
        ]
        if rnd == 1:  # describe: prompts x samples at T=1, then synthesize: questions at T=0.3
            vlm.generate(
                [im for im in train for _ in range(2)],
                ["describe the image .", "what do you see ?"] * len(train),
                n=args.samples,
                temperature=1.0,
                **gen,
            )
            vlm.generate(
                [im for im in train for _ in QUESTIONS], QUESTIONS * len(train), temperature=0.3, **gen
            )
        else:  # rejection sampling: questions x samples
            vlm.generate(
                [im for im in train for _ in QUESTIONS], QUESTIONS * len(train), n=3, temperature=0.7, **gen
            )
        pairs = [
            QA(f"{i}:{q}", im, q, "a small bird with a red crown", "x")
            for i, im in enumerate(train)
            for q in QUESTIONS[:2]
        ]
        cfg = FinetuneConfig(
            lora_r=8,
            lora_alpha=16,
            lr=1e-3,
            epochs=args.epochs,
            batch_size=8,
            micro_batch_size=8,
            augment=False,
            max_length=512,
        )
        vlm.train_lora(
            pairs, cfg, Path(args.tmp) / f"ft_{cache_dir is not None}_{rnd}", seed=rnd, progress=False
        )
        vlm.generate(test, QUESTIONS[:1] * len(test), **gen)  # evaluate
        for h in hooks:
            h.remove()
        tower_s += clock[1]
        requested += counter[0]
        encoded += vlm.feature_stats["misses"] if cache_dir is not None else counter[0]
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "tower": tower_s,
        "requested": requested,
        "encoded": encoded,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: a random tiny LLaVA built in a temp dir)")
    ap.add_argument("--train", type=int, default=24, help="training images")
    ap.add_argument("--test", type=int, default=8, help="test images")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=5, help="description samples per prompt")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting; the best counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.tmp = tempfile.mkdtemp(prefix="bench_features_")
    tmp = Path(args.tmp)
    path = args.model or str(
        build_llava(
            tmp / "llava", image_size=96, patch_size=8, vision_hidden=96, vision_layers=6, hidden=64, layers=2
        )
    )
    size = 96 if not args.model else 224
    images = [str(p) for p in make_images(tmp / "images", args.train + args.test, size=size)]
    train, test = images[: args.train], images[args.train :]
    print(
        f"model {path}; {args.rounds} rounds, {args.train} train + {args.test} test images, {args.threads} threads"
    )
    best: dict[str, dict[str, float]] = {}
    for rep in range(args.repeats):  # interleaved, best of N: the machine may be shared
        for name in ("off", "on"):
            cache_dir = tmp / f"features{rep}" if name == "on" else None
            r = run_pipeline(path, train, test, args, cache_dir)
            best[name] = {k: min(v, best.get(name, r)[k]) for k, v in r.items()}
    off, on = best["off"], best["on"]
    print(
        f"tower image encodings requested: {on['requested']:.0f} (each round: describe/sample, synthesize, "
        f"{args.epochs:g} epochs, evaluate)"
    )
    for label, r in (("without cache", off), ("with cache", on)):
        print(
            f"{label:13s}: {r['encoded']:5.0f} encodings  tower cpu {r['tower']:6.2f} s  "
            f"pipeline wall {r['wall']:6.2f} s  cpu {r['cpu']:6.2f} s"
        )
    print(
        f"ratios without/with: encodings {off['encoded'] / max(on['encoded'], 1):.1f}x, "
        f"tower cpu {off['tower'] / max(on['tower'], 1e-9):.1f}x, pipeline wall {off['wall'] / on['wall']:.2f}x, "
        f"cpu {off['cpu'] / on['cpu']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
