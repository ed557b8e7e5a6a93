"""Tiny dataset trees in every format selfsynth reads, with real 8x8 images, for loader tests.

Each builder writes the official file layout of its dataset (index files, .mat lists, CSV) with a
handful of images and returns the root to pass as ``--root``, so tests exercise the same parsing
a real download goes through.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(rgb).save(path, format=fmt)
    return path


# Hostile image files for the checks that every image opened from disk goes through.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header declaring ``side`` x ``side`` RGB pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def truncated_jpeg(path: Path) -> Path:
    rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format="JPEG", quality=95)
    path.write_bytes(path.read_bytes()[:1500])
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# CUB: 2 classes x 3 images; images 1,2 / 4,5 train, 3 / 6 test.
def build_cub(tmp: Path) -> Path:
    root = tmp / "CUB_200_2011"
    classes = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross"}
    images, labels, split = [], [], []
    for i in range(1, 7):
        cid = 1 if i <= 3 else 2
        rel = f"{classes[cid]}/{classes[cid][4:]}_{i:04d}.jpg"
        make_image(root / "images" / rel, i)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {cid}")
        split.append(f"{i} {0 if i in (3, 6) else 1}")
    write(root / "classes.txt", "".join(f"{k} {v}\n" for k, v in classes.items()))
    write(root / "images.txt", "\n".join(images) + "\n")
    write(root / "image_class_labels.txt", "\n".join(labels) + "\n")
    write(root / "train_test_split.txt", "\n".join(split) + "\n")
    return root


def _mat_list(paths: list[str], labels: list[int]) -> dict:
    """The structure of Stanford Dogs' lists: N x 1 cell arrays of 1 x 1 cells holding a string."""
    files = np.empty((len(paths), 1), dtype=object)
    for i, p in enumerate(paths):
        files[i, 0] = np.array([p], dtype=object)
    annotations = np.empty((len(paths), 1), dtype=object)
    for i, p in enumerate(paths):
        annotations[i, 0] = np.array([p.rsplit(".", 1)[0]], dtype=object)
    return {
        "file_list": files,
        "annotation_list": annotations,
        "labels": np.array(labels, dtype=np.float64).reshape(-1, 1),
    }


# Stanford Dogs: 2 breeds; train 2 + 2, test 1 + 1.
def build_dogs(tmp: Path, *, train_labels: list[int] | None = None) -> Path:
    import scipy.io

    root = tmp / "dogs"
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    train, test = [], []
    for b, breed in enumerate(breeds):
        wnid = breed.split("-")[0]
        for k in range(3):
            rel = f"{breed}/{wnid}_{k}.jpg"
            make_image(root / "Images" / rel, 10 * b + k)
            (test if k == 2 else train).append((rel, b + 1))
    tl = train_labels or [lab for _, lab in train]
    scipy.io.savemat(root / "train_list.mat", _mat_list([p for p, _ in train], tl))
    scipy.io.savemat(root / "test_list.mat", _mat_list([p for p, _ in test], [lab for _, lab in test]))
    return root


# FGVC-Aircraft: 3 variants (2 families), trainval 2 per variant, test 1 per variant.
def build_aircraft(tmp: Path) -> Path:
    root = tmp / "fgvc-aircraft-2013b"
    data = root / "data"
    variants = {
        "707-320": ("Boeing 707", "Boeing"),
        "727-200": ("Boeing 727", "Boeing"),
        "A300B4": ("A300", "Airbus"),
    }
    rows: dict[str, list[str]] = {"trainval": [], "test": []}
    n = 1000000
    for v in variants:
        for k in range(3):
            n += 1
            image_id = f"{n:07d}"
            make_image(data / "images" / f"{image_id}.jpg", n)
            rows["test" if k == 2 else "trainval"].append((image_id, v))
    for level, idx in (("variant", None), ("family", 0), ("manufacturer", 1)):
        for split, items in rows.items():
            lines = [f"{i} {v if idx is None else variants[v][idx]}" for i, v in items]
            write(data / f"images_{level}_{split}.txt", "\n".join(lines) + "\n")
    write(data / "variants.txt", "\n".join(variants) + "\n")
    write(data / "families.txt", "\n".join(sorted({f for f, _ in variants.values()})) + "\n")
    write(data / "manufacturers.txt", "Airbus\nBoeing\n")
    return root


# PlantVillage: 2 classes x 5 images in one folder per class (no official split).
def build_pld(tmp: Path, per_class: int = 5) -> Path:
    root = tmp / "plantvillage"
    for c, name in enumerate(["Tomato___Early_blight", "Corn_(maize)___healthy"]):
        for k in range(per_class):
            make_image(root / name / f"img_{c}_{k}.JPG", 100 * c + k)
    return root


# HAM10000: 2 diagnoses; lesions with 1-3 images each, spread over two image folders.
HAM_ROWS = [  # lesion_id, image_id, dx
    ("HAM_0000001", "ISIC_0000001", "mel"),
    ("HAM_0000001", "ISIC_0000002", "mel"),
    ("HAM_0000002", "ISIC_0000003", "mel"),
    ("HAM_0000003", "ISIC_0000004", "mel"),
    ("HAM_0000003", "ISIC_0000005", "mel"),
    ("HAM_0000003", "ISIC_0000006", "mel"),
    ("HAM_0000004", "ISIC_0000007", "nv"),
    ("HAM_0000005", "ISIC_0000008", "nv"),
    ("HAM_0000005", "ISIC_0000009", "nv"),
    ("HAM_0000006", "ISIC_0000010", "nv"),
]


def build_ham(tmp: Path, rows: list[tuple[str, str, str]] = HAM_ROWS) -> Path:
    root = tmp / "ham"
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i, (lesion, image, dx) in enumerate(rows):
        part = "HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2"
        make_image(root / part / f"{image}.jpg", i)
        lines.append(f"{lesion},{image},{dx},histo,{40 + i}.0,male,back")
    write(root / "HAM10000_metadata.csv", "\n".join(lines) + "\n")
    return root


# Chest X-ray: train 2+2, val 1+1 (merged into train), test 1+1.
def build_chest(tmp: Path) -> Path:
    root = tmp / "chest_xray"
    counts = {"train": 2, "val": 1, "test": 1}
    for split, n in counts.items():
        for k in range(n):
            make_image(root / split / "NORMAL" / f"IM-{split}-{k}.jpeg", k)
            make_image(
                root / split / "PNEUMONIA" / f"person{k}_{'virus' if k else 'bacteria'}_{split}.jpeg", 50 + k
            )
    return root


# imagefolder with explicit train/test folders: 2 classes, train 2 each, test 1 each.
def build_imagefolder(tmp: Path) -> Path:
    root = tmp / "folder"
    for c, name in enumerate(["cat", "dog"]):
        for k in range(3):
            make_image(root / ("test" if k == 2 else "train") / name / f"{name}{k}.png", 10 * c + k)
    return root


def _manifest_rows(root: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for c, name in enumerate(["red fox", "grey wolf"]):
        for k in range(3):
            split = "test" if k == 2 else "train"
            rel = f"img/{c}_{k}.png"
            make_image(root / rel, 10 * c + k)
            rows[split].append({"id": f"{c}-{k}", "image": rel, "label": name, "photographer": "me"})
    return rows


def build_jsonl(tmp: Path) -> Path:
    root = tmp / "manifest_jsonl"
    for split, rows in _manifest_rows(root).items():
        write(root / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return root


def build_csv(tmp: Path) -> Path:
    root = tmp / "manifest_csv"
    for split, rows in _manifest_rows(root).items():
        lines = ["id,img_path,label,photographer"] + [f"{r['id']},{r['image']},{r['label']},me" for r in rows]
        write(root / f"{split}.csv", "\n".join(lines) + "\n")
    return root


# The world's files: 2 species, train 2 each, test 1 each, plus concepts.json.
def build_world(tmp: Path) -> Path:
    root = tmp / "world"
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for c, name in enumerate(["azure finch", "crimson tit"]):
        for k in range(3):
            split = "test" if k == 2 else "train"
            rel = f"images/{split}/{c}_{k}.png"
            make_image(root / rel, 10 * c + k)
            rows[split].append(
                {
                    "id": f"w{c}{k}",
                    "image": rel,
                    "label": name,
                    "visible_concepts": ["blue crown"],
                    "attributes": {"crown": "blue"},
                }
            )
    for split, items in rows.items():
        write(root / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    bank = {
        "azure finch": ["blue crown", "short conical beak", "white wing bars"],
        "crimson tit": ["red breast", "black eye mask", "forked tail"],
    }
    write(root / "concepts.json", json.dumps(bank))
    return root


# Finer reference layout: lists in ROOT, img_path relative to ROOT's parent.
def build_finer(tmp: Path) -> Path:
    base = tmp / "finer"
    root = base / "lists"
    for split, n in (("train", 2), ("test", 1)):
        items = []
        for c, name in enumerate(["Boeing 707", "Airbus A300"]):
            for k in range(n):
                rel = f"images/{split}_{c}_{k}.jpg"
                make_image(base / rel, 10 * c + k)
                items.append({"id": f"{split}{c}{k}", "img_path": rel, "label": name})
        write(root / f"aircraft-{split}.json", json.dumps(items))
    return root


BUILDERS = {
    "world": build_world,
    "finer": build_finer,
    "cub": build_cub,
    "dogs": build_dogs,
    "aircraft": build_aircraft,
    "pld": build_pld,
    "ham10000": build_ham,
    "chest_xray": build_chest,
    "imagefolder": build_imagefolder,
    "jsonl": build_jsonl,
    "csv": build_csv,
}
