"""Build a world folder: images, train/test records, concepts, captions, VQA and world.json.

The species seed alone decides the species (names, parts, concept phrases); the image seed
decides the images, captions and questions. The same seeds give byte-identical files. A
``difficulty`` block in world.json says how hard the world is: how many test images fit more
than one species given what they show, and how far a nearest-mean-colour classifier gets (it
should stay near chance: the task needs parts, not colour averages).
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import random
import shutil
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfsynth.data.world.draw import draw_image
from selfsynth.data.world.parse import fitting_species
from selfsynth.data.world.phrases import PARTS, concept_phrase
from selfsynth.data.world.species import MAX_SPECIES, Species, make_species
from selfsynth.data.world.text import captions, lexicon, vqa
from selfsynth.errors import ConfigError
from selfsynth.io import atomic_write_bytes, write_json, write_jsonl

log = logging.getLogger(__name__)

WORLD_VERSION = 1
N_CAPTIONS = 5
N_VQA = 3
_SCENE_KEYS = ("pose", "facing", "head_turned", "background", "occluder", "occluded", "cropped")


def _check(species: int, train_per_class: int, test_per_class: int, size: int) -> None:
    if not 1 <= species <= MAX_SPECIES:
        raise ConfigError(f"--species must be between 1 and {MAX_SPECIES}, got {species}")
    if train_per_class < 1 or test_per_class < 1:
        raise ConfigError("--train-per-class and --test-per-class must be at least 1")
    if not 32 <= size <= 1024:
        raise ConfigError(f"--size must be between 32 and 1024 pixels, got {size}")


def _prepare(out: Path) -> None:
    """Refuse to write into a folder that holds something other than a world; clear an old world."""
    if out.is_file():
        raise ConfigError(f"{out} is a file; give a folder for the world")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "world.json").is_file():
            raise ConfigError(f"{out} is not empty and holds no world.json; pick a new or empty folder")
        shutil.rmtree(out / "images", ignore_errors=True)
        (out / "validation.jsonl").unlink(missing_ok=True)  # a redraw without one must not keep the old
        (out / "world.json").unlink()  # written last: its presence means "complete"
    out.mkdir(parents=True, exist_ok=True)


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # Pillow writes no timestamp: bytes depend on pixels only
    return buf.getvalue()


def _colour_features(arr: np.ndarray) -> tuple[list[float], list[float]]:
    s = arr.shape[0]
    q = s // 4
    return arr.reshape(-1, 3).mean(0).tolist(), arr[q : s - q, q : s - q].reshape(-1, 3).mean(0).tolist()


def _nearest_mean_accuracy(
    train: list[tuple[str, list[float]]], test: list[tuple[str, list[float]]]
) -> float:
    labels = sorted({y for y, _ in train})
    means = np.stack([np.mean([x for y, x in train if y == lab], axis=0) for lab in labels])
    xs = np.asarray([x for _, x in test])
    pred = np.argmin(((xs[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float(np.mean([labels[p] == y for p, (y, _) in zip(pred, test, strict=True)]))


def difficulty(rows: dict[str, list[dict[str, Any]]], feats: dict[str, list[tuple[str, list[float], list[float]]]],
               table: dict[str, dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    """How hard the world is (see the module docstring)."""
    test = rows["test"]
    ambiguous = [
        len(fitting_species({p: r["attributes"][p] for p in r["visible_parts"]}, table)) > 1 for r in test
    ]
    part_rates = {p: round(float(np.mean([p in r["visible_parts"] for r in test])), 3) for p in PARTS}
    return {
        "ambiguous_test_fraction": round(float(np.mean(ambiguous)), 4),
        "colour_mean_accuracy": round(_nearest_mean_accuracy(
            [(y, f) for y, f, _ in feats["train"]], [(y, f) for y, f, _ in feats["test"]]), 4),
        "colour_center_accuracy": round(_nearest_mean_accuracy(
            [(y, c) for y, _, c in feats["train"]], [(y, c) for y, _, c in feats["test"]]), 4),
        "chance_accuracy": round(1.0 / len(table), 4),
        "mean_visible_parts": round(float(np.mean([len(r["visible_parts"]) for r in test])), 2),
        "all_parts_visible_fraction": round(float(np.mean([len(r["visible_parts"]) == len(PARTS) for r in test])), 4),
        "part_visible_rate": part_rates,
    }  # fmt: skip


def _draw_species(out: Path, split: str, per_class: int, ci: int, s: Species, seeds: tuple[int, int],
                  size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[Any]]:  # fmt: skip
    """One species' images of one split (files written) and their records.

    Every image draws from its own seeded generator, so the result does not depend on which
    process draws it or in which order.
    """
    species_seed, image_seed = seeds
    rows, caps, qas, feats = [], [], [], []
    for k in range(per_class):
        iid = f"{split}-{ci:03d}-{k:04d}"
        rel = f"images/{split}/{iid}.png"
        drawn = draw_image(
            s.attributes, size, random.Random(f"world-image:{image_seed}:{species_seed}:{iid}")
        )
        atomic_write_bytes(out / rel, _png(drawn.image))
        scene = drawn.scene
        rows.append({
            "id": iid, "image": rel, "label": s.label, "split": split, "group": s.group,
            "visible_concepts": [concept_phrase(p, s.attributes[p]) for p in drawn.visible_parts],
            "visible_parts": drawn.visible_parts, "attributes": dict(s.attributes),
            **{key: scene[key] for key in _SCENE_KEYS},
        })  # fmt: skip
        trng = random.Random(f"world-text:{image_seed}:{species_seed}:{iid}")
        caps.append({"id": iid, "image": rel, "split": split,
                     "captions": captions(s.attributes, drawn.visible_parts, scene, trng, N_CAPTIONS)})  # fmt: skip
        for j, q in enumerate(vqa(s.attributes, drawn.visible_parts, scene, trng, N_VQA)):
            qas.append({"id": f"{iid}-q{j}", "image": rel, "split": split, **q})
        feats.append((s.label, *_colour_features(np.asarray(drawn.image, dtype=np.float32))))
    return rows, caps, qas, feats


def _draw_split(out: Path, split: str, per_class: int, sp: list[Species], seeds: tuple[int, int], size: int,
                bar: Any, pool: Executor | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    caps: list[dict[str, Any]] = []
    qas: list[dict[str, Any]] = []
    feats: list[Any] = []
    n = len(sp)
    args = ([out] * n, [split] * n, [per_class] * n, range(n), sp, [seeds] * n, [size] * n)
    parts = (pool.map if pool else map)(_draw_species, *args)
    for r, c, q, f in parts:  # in species order whatever the pool's finishing order
        rows += r
        caps += c
        qas += q
        feats += f
        bar.update(len(r))
    return rows, caps, qas, feats


def draw_workers() -> int:
    """Drawing processes worth starting here: one per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def make_world(out: str | Path, *, species: int = 16, train_per_class: int = 40, test_per_class: int = 20,
               species_seed: int = 0, image_seed: int = 0, size: int = 128, progress: bool = False,
               workers: int = 0, validation_per_class: int = 0) -> dict[str, Any]:  # fmt: skip
    """Write a world into ``out`` and return its ``world.json`` content.

    ``validation_per_class`` > 0 also draws a validation split (``validation.jsonl``) of the same
    species, for choosing settings without looking at test. Every image has its own seed from
    its split and index, so train and test are the same with or without it; its captions and VQA
    items come after train's and test's in their files.

    ``workers`` > 1 draws in that many processes, because drawing is pure Python and so bound
    to one core per process; the files are the same whatever the count. The processes are
    spawned, so a script that calls this with workers needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    _check(species, train_per_class, test_per_class, size)
    out = Path(out)
    _prepare(out)
    sp = make_species(species, species_seed, forbidden_words=set(lexicon()))
    table = {s.label: s.attributes for s in sp}
    if validation_per_class < 0:
        raise ValueError("validation_per_class must be >= 0")
    per_split = {"train": train_per_class, "test": test_per_class}
    if validation_per_class:
        per_split["validation"] = validation_per_class
    total = species * sum(per_split.values())
    rows: dict[str, list[dict[str, Any]]] = {}
    feats: dict[str, list[Any]] = {}
    all_caps: list[dict[str, Any]] = []
    all_qas: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None
    try:
        with tqdm(total=total, desc="drawing the world", unit="img", disable=not progress) as bar:
            for split, per in per_split.items():
                r, c, q, f = _draw_split(out, split, per, sp, (species_seed, image_seed), size, bar, pool)
                rows[split], feats[split] = r, f
                all_caps += c
                all_qas += q
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    write_jsonl(out / "train.jsonl", rows["train"])
    write_jsonl(out / "test.jsonl", rows["test"])
    if validation_per_class:
        write_jsonl(out / "validation.jsonl", rows["validation"])
    write_jsonl(out / "captions.jsonl", all_caps)
    write_jsonl(out / "vqa.jsonl", all_qas)
    write_json(out / "concepts.json", {s.label: s.concepts for s in sp})
    world = {
        "version": WORLD_VERSION,
        "species_seed": species_seed,
        "image_seed": image_seed,
        "size": size,
        "species_count": species,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "validation_per_class": validation_per_class,
        "counts": {
            "train": len(rows["train"]),
            "test": len(rows["test"]),
            "validation": len(rows.get("validation", [])),
            "captions": len(all_caps) * N_CAPTIONS,
            "vqa": len(all_qas),
        },  # fmt: skip
        "parts": PARTS,
        "groups": [[s.label for s in sp if s.group == g] for g in sorted({s.group for s in sp})],
        "species": [s.to_dict() for s in sp],
        "difficulty": difficulty(rows, feats, table),
    }
    write_json(out / "world.json", world)
    log.info(
        "world: %d species, %d train / %d test images in %s",
        species,
        len(rows["train"]),
        len(rows["test"]),
        out,
    )
    return world


def summary(world: dict[str, Any]) -> str:
    """A few lines about a world (``world.json`` content) for the command line."""
    d = world.get("difficulty", {})
    c = world.get("counts", {})
    lines = [
        f"species      {world.get('species_count')} in {len(world.get('groups', []))} confusable groups "
        f"(species seed {world.get('species_seed')}, image seed {world.get('image_seed')}, {world.get('size')} px)",
        f"images       {c.get('train')} train, {c.get('test')} test; {c.get('captions')} captions, {c.get('vqa')} VQA items",
        f"ambiguous    {d.get('ambiguous_test_fraction', 0):.1%} of test images fit more than one species",
        f"colour only  nearest mean colour {d.get('colour_mean_accuracy', 0):.1%} (centre crop "
        f"{d.get('colour_center_accuracy', 0):.1%}), chance {d.get('chance_accuracy', 0):.1%}",
        f"visibility   {d.get('mean_visible_parts', 0)} of {len(world.get('parts', {}))} parts visible on average; "
        f"all visible in {d.get('all_parts_visible_fraction', 0):.1%}",
    ]
    return "\n".join(lines)
