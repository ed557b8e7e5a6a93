"""Benchmark IB concept scoring: the linear ``ib_scores`` against the reference's quadratic approach.

The reference scripts, for every image, concatenate the descriptions of all other images and sum
e^{z.n/tau} over them. ``ib_scores`` sums once per concept over all descriptions and subtracts
each image's own terms. Both are run on the same synthetic CUB-shaped data; the script prints
both times, the speed-up and the largest relative difference.

    .venv/bin/python bench/ib_select.py --images 500
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from selfsynth.stages.ib_score import ib_scores


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_data(images: int, descriptions: int, classes: int, concepts: int, dim: int, seed: int):
    """Descriptions scattered around their class's concepts (so scores differ, like real data)."""
    rng = np.random.default_rng(seed)
    concept_emb = unit(rng.normal(size=(classes * concepts, dim)))
    labels = np.arange(images) % classes
    picks = (labels * concepts)[:, None] + rng.integers(0, concepts, size=(images, descriptions))
    noise = rng.normal(size=(images, descriptions, dim)).astype(np.float32)
    desc_emb = unit(concept_emb[picks] + 0.8 * noise)
    candidates = [list(range(c * concepts, (c + 1) * concepts)) for c in labels]
    return desc_emb, concept_emb, candidates


def reference_scores(desc_emb: np.ndarray, concept_emb: np.ndarray, candidates, tau: float):
    """The reference approach, float32 like the original: re-concatenate the others per image."""
    out = []
    for k in range(desc_emb.shape[0]):
        others = np.concatenate([desc_emb[:k], desc_emb[k + 1 :]]).reshape(-1, desc_emb.shape[2])
        z = concept_emb[candidates[k]]
        neg = np.exp(z @ others.T / tau).sum(axis=1)  # (c,)
        pos = np.exp(desc_emb[k] @ z.T / tau)  # (m, c)
        out.append(np.log(pos / (pos + neg[None, :])).sum(axis=0))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--descriptions", type=int, default=30, help="descriptions per image")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--concepts", type=int, default=15, help="concepts per class")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reference", action="store_true", help="time ib_scores only (large sizes)")
    args = p.parse_args(argv)

    desc_emb, concept_emb, candidates = make_data(
        args.images, args.descriptions, args.classes, args.concepts, args.dim, args.seed
    )
    print(
        f"{args.images} images x {args.descriptions} descriptions, {args.classes} classes x "
        f"{args.concepts} concepts, d={args.dim}, tau={args.tau}"
    )
    t0 = time.perf_counter()
    fast = ib_scores(desc_emb, concept_emb, candidates, args.tau)
    t_fast = time.perf_counter() - t0
    print(f"ib_scores (linear)      {t_fast:8.3f} s")
    if args.skip_reference:
        return 0
    t0 = time.perf_counter()
    ref = reference_scores(desc_emb, concept_emb, candidates, args.tau)
    t_ref = time.perf_counter() - t0
    print(f"reference (quadratic)   {t_ref:8.3f} s")
    rel = max(
        float(np.max(np.abs(f - r) / np.maximum(np.abs(r), 1e-12))) for f, r in zip(fast, ref, strict=True)
    )
    print(f"speed-up                {t_ref / t_fast:8.1f} x")
    print(f"max relative difference {rel:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
