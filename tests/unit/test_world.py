"""The world generator's file contract, determinism, seeds, CLI and name hygiene (a tiny 64 px world)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from selfsynth.cli import main
from selfsynth.data.world import make_species, make_world
from selfsynth.data.world.species import names_clash
from selfsynth.data.world.text import lexicon
from selfsynth.data.world.vocab import PARTS, parse_attributes
from selfsynth.errors import ConfigError

SMALL = {"species": 4, "train_per_class": 3, "test_per_class": 2, "size": 64}
FILES = ("train.jsonl", "test.jsonl", "captions.jsonl", "vqa.jsonl", "concepts.json", "world.json")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    make_world(out, **SMALL)
    return out


def test_file_contract(world: Path) -> None:
    for name in FILES:
        assert (world / name).is_file(), name
    info = json.loads((world / "world.json").read_text())
    bank = json.loads((world / "concepts.json").read_text())
    assert len(bank) == 4 and all(len(cs) == len(PARTS) for cs in bank.values())
    assert [s["label"] for s in info["species"]] == list(bank)
    rows = {"train": _jsonl(world / "train.jsonl"), "test": _jsonl(world / "test.jsonl")}
    assert len(rows["train"]) == 12 and len(rows["test"]) == 8
    for split, items in rows.items():
        for r in items:
            assert {
                "id",
                "image",
                "label",
                "visible_concepts",
                "attributes",
                "visible_parts",
                "pose",
                "background",
            } <= set(r)
            assert r["split"] == split and r["label"] in bank
            with Image.open(world / r["image"]) as img:
                assert img.size == (64, 64) and img.mode == "RGB"
            assert set(r["attributes"]) == set(PARTS)
            assert r["pose"] in ("perched", "flying") and r["background"] in (
                "sky",
                "water",
                "foliage",
                "sand",
            )
    ids = {r["id"] for items in rows.values() for r in items}
    caps = _jsonl(world / "captions.jsonl")
    assert {c["id"] for c in caps} == ids and all(len(c["captions"]) == 5 for c in caps)
    qas = _jsonl(world / "vqa.jsonl")
    assert {q["split"] for q in qas} == {"train", "test"}
    for q in qas:
        assert set(q["options"]) == set("ABCD") and q["answer"] in "ABCD"
        assert len(set(q["options"].values())) == 4 and (world / q["image"]).is_file()
    d = info["difficulty"]
    for key in (
        "ambiguous_test_fraction",
        "colour_mean_accuracy",
        "colour_center_accuracy",
        "chance_accuracy",
    ):
        assert 0.0 <= d[key] <= 1.0, key
    assert d["chance_accuracy"] == 0.25


def test_same_seeds_give_identical_bytes(world: Path, tmp_path: Path) -> None:
    make_world(tmp_path / "again", **SMALL)
    assert _all_bytes(world) == _all_bytes(tmp_path / "again")


def test_drawing_processes_write_the_same_files(world: Path, tmp_path: Path) -> None:
    # each image draws from its own seeded generator, so spreading species over processes
    # must not change a byte (nor the order of the records)
    make_world(tmp_path / "pooled", **SMALL, workers=2)
    assert _all_bytes(world) == _all_bytes(tmp_path / "pooled")


def test_a_validation_split_leaves_train_and_test_as_they_were(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "with_validation"
    make_world(out, **SMALL, validation_per_class=2)
    a, b = _all_bytes(world), _all_bytes(out)
    for name in ("train.jsonl", "test.jsonl", "concepts.json"):
        assert a[name] == b[name]
    for name in ("captions.jsonl", "vqa.jsonl"):  # validation's items come after train's and test's
        assert b[name].startswith(a[name]) and len(b[name]) > len(a[name])
    assert all(b[k] == v for k, v in a.items() if k.endswith(".png"))
    val = _jsonl(out / "validation.jsonl")
    assert len(val) == 8 and {r["split"] for r in val} == {"validation"}
    assert json.loads(b["world.json"])["counts"]["validation"] == 8
    # redrawing without one removes the old validation file
    make_world(out, **SMALL)
    assert not (out / "validation.jsonl").exists()


def test_image_seed_changes_images_not_species(world: Path, tmp_path: Path) -> None:
    make_world(tmp_path / "other", **SMALL, image_seed=1)
    a, b = _all_bytes(world), _all_bytes(tmp_path / "other")
    assert a["concepts.json"] == b["concepts.json"]
    sa, sb = (json.loads(x["world.json"])["species"] for x in (a, b))
    assert sa == sb
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != b[k] for k in pngs) == len(pngs)


def test_species_seed_changes_species() -> None:
    a, b = make_species(16, 0), make_species(16, 1)
    assert [s.label for s in a] != [s.label for s in b]
    assert [s.attributes for s in a] != [s.attributes for s in b]
    assert [s.attributes for s in a] == [s.attributes for s in make_species(16, 0)]


def test_captions_and_vqa_never_name_a_species(world: Path) -> None:
    labels = list(json.loads((world / "concepts.json").read_text()))
    words = {w.lower() for label in labels for w in label.split()} | {x.lower() for x in labels}
    texts = [c for row in _jsonl(world / "captions.jsonl") for c in row["captions"]]
    texts += [q["question"] + " " + " ".join(q["options"].values()) for q in _jsonl(world / "vqa.jsonl")]
    for text in texts:
        low = text.lower()
        assert not [w for w in words if w in low], text


def test_visible_concepts_are_a_varying_subset(world: Path) -> None:
    bank = json.loads((world / "concepts.json").read_text())
    rows = _jsonl(world / "train.jsonl") + _jsonl(world / "test.jsonl")
    for r in rows:
        assert set(r["visible_concepts"]) <= set(bank[r["label"]])
        assert len(r["visible_concepts"]) == len(r["visible_parts"])
    assert any(len({tuple(r["visible_concepts"]) for r in rows if r["label"] == lab}) > 1 for lab in bank)
    assert any(len(r["visible_parts"]) < len(PARTS) for r in rows)


def test_captions_state_only_true_visible_values(world: Path) -> None:
    rows = {r["id"]: r for r in _jsonl(world / "train.jsonl") + _jsonl(world / "test.jsonl")}
    for row in _jsonl(world / "captions.jsonl"):
        r = rows[row["id"]]
        for k, cap in enumerate(row["captions"]):
            got = parse_attributes(cap)
            assert all(r["attributes"][p] == v for p, v in got.items()), cap
            assert set(got) <= set(r["visible_parts"]), cap
            if k in (0, 3):  # the full descriptions state every visible part
                assert set(got) == set(r["visible_parts"]), cap


def test_species_groups_and_names() -> None:
    sp = make_species(40, 3, forbidden_words=set(lexicon()))
    labels = [s.label for s in sp]
    assert len(set(labels)) == 40 and not names_clash(labels)
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", x) for x in labels)
    for s in sp:
        for w in s.label.lower().split():
            assert not any(w in lw for lw in lexicon()), w
    diff = lambda a, b: sum(a.attributes[p] != b.attributes[p] for p in PARTS)  # noqa: E731
    for a in sp:
        for b in sp:
            if a is b:
                continue
            assert 1 <= diff(a, b) <= 2 if a.group == b.group else diff(a, b) >= 3


def test_cli_make_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = [
        "world",
        "make",
        "--out",
        str(out),
        "--species",
        "4",
        "--train-per-class",
        "2",
        "--test-per-class",
        "1",
    ]
    assert main([*args, "--size", "48", "--species-seed", "5", "--image-seed", "7", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ambiguous" in printed and "chance" in printed
    info = json.loads((out / "world.json").read_text())
    assert (info["species_seed"], info["image_seed"], info["size"], info["counts"]["train"]) == (5, 7, 48, 8)
    assert main(["world", "show", str(out)]) == 0
    assert "species" in capsys.readouterr().out


def test_bad_input_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "make", "--out", str(tmp_path / "x"), "--species", "0"]) == 2
    assert "--species" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        make_world(tmp_path / "busy", **SMALL)
    assert main(["world", "show", str(tmp_path / "nothing")]) == 2
