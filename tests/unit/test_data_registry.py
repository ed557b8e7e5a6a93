"""The format registry: a registered format is valid in a YAML config, and formats declare capabilities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures_data import make_image

from selfsynth.config import DataConfig, load_config
from selfsynth.data import (
    Capabilities,
    get_capabilities,
    get_loader,
    load_examples,
    register_format,
    registry,
)
from selfsynth.errors import ConfigError
from selfsynth.prompts import pools_for
from selfsynth.records import QA, Example


@pytest.fixture
def plugin_formats(monkeypatch):
    """Formats registered inside a test vanish after it."""
    monkeypatch.setattr(registry, "_EXTRA", {})


def _tiny_loader(cfg: DataConfig, split: str, problems) -> list[Example]:
    root = Path(cfg.root)
    out = []
    for i, label in enumerate(("circle", "square", "circle", "square")):
        image = make_image(root / split / f"{i}.png", seed=i)
        out.append(Example(f"{split}-{i}", str(image), label, split))
    return out


def _general(cfg: DataConfig, train, describe) -> list[QA]:
    return [QA(f"g:{e.id}", e.image, describe[0], "A shape.", "", "general") for e in train]


def test_a_registered_format_works_in_a_yaml_config(tmp_path, plugin_formats):
    recipe = tmp_path / "shapes.yaml"
    recipe.write_text(f"data:\n  format: shapes\n  root: {tmp_path / 'data'}\nmodel:\n  path: /m\n")
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match="data.format='shapes' is not one of"):
        load_config(recipe)

    offers = Capabilities(concept_bank=lambda cfg: str(Path(cfg.root) / "bank.json"), general_pairs=_general)
    register_format("shapes", _tiny_loader, "circles and squares", capabilities=offers)
    cfg = load_config(recipe)
    assert cfg.data.format == "shapes"
    train = load_examples(cfg.data, "train")
    assert [(e.id, e.label) for e in train] == [
        ("train-0", "circle"),
        ("train-1", "square"),
        ("train-2", "circle"),
        ("train-3", "square"),
    ]
    assert all(Path(e.image).is_file() for e in train)

    # the stages ask the format what it offers
    from selfsynth.stages.concepts import default_bank_path
    from selfsynth.stages.finetune import general_pairs

    assert get_capabilities(cfg.data) is offers
    assert default_bank_path(SimpleNamespace(cfg=cfg)) == str(tmp_path / "data" / "bank.json")
    ctx = SimpleNamespace(cfg=cfg, train=train, pools=pools_for(cfg.data.kind))
    assert [q.id for q in general_pairs(ctx)] == [f"g:train-{i}" for i in range(4)]


def test_a_format_declaring_nothing_offers_nothing(tmp_path, plugin_formats):
    register_format("bare", _tiny_loader)
    cfg = load_config(None, ["data.format=bare", f"data.root={tmp_path}", "model.path=/m"])
    from selfsynth.stages.concepts import default_bank_path
    from selfsynth.stages.finetune import general_pairs

    assert get_capabilities("bare") == Capabilities()
    assert default_bank_path(SimpleNamespace(cfg=cfg)) == ""
    assert general_pairs(SimpleNamespace(cfg=cfg, train=[], pools=pools_for("generic"))) == []


def test_an_unknown_format_errors_with_a_did_you_mean():
    with pytest.raises(
        ConfigError, match=r"data.format='jsonn' is not one of world, .*csv, hf \(did you mean 'jsonl'"
    ):
        load_config(None, ["data.format=jsonn", "data.root=/d", "model.path=/m"])
    with pytest.raises(ConfigError, match=r"unknown data format 'wrld' \(did you mean 'world'\?\)"):
        get_loader("wrld")
    with pytest.raises(ConfigError, match="did you mean 'world'"):
        get_capabilities("wrld")


def test_only_the_world_offers_more_than_images(tmp_path):
    world = get_capabilities("world")
    assert world.visibility and world.citer and world.general_pairs and world.general_vqa
    assert world.concept_bank(DataConfig(root=str(tmp_path))) == str(tmp_path / "concepts.json")
    assert world.train_manifest == "train.jsonl"
    others = [name for name in registry.list_formats() if name != "world"]
    assert others and all(get_capabilities(name) == Capabilities() for name in others)


def test_each_choice_is_the_owners_list():
    from selfsynth.data.aircraft import LEVELS
    from selfsynth.pipeline import METHODS
    from selfsynth.prompts import NOUNS
    from selfsynth.stages import sample, synthesize
    from selfsynth.stages.rs_score import NEGATIVE_MODES

    owners = {
        "data.kind": NOUNS,
        "data.label_level": LEVELS,
        "method": METHODS,
        "sample.negatives": NEGATIVE_MODES,
        "sample.fallback": sample.FALLBACKS,
        "synthesize.fallback": synthesize.FALLBACKS,
    }
    for key, names in owners.items():
        for name in names:
            load_config(None, [f"{key}={name}"], require=())
        with pytest.raises(ConfigError, match=rf"{key}='{list(names)[0]}x' is not one of {', '.join(names)}"):
            load_config(None, [f"{key}={list(names)[0]}x"], require=())


def test_the_config_module_imports_no_stage_or_data_module():
    code = (
        "import sys, selfsynth.config; "
        "print(sorted(m for m in sys.modules if m.startswith(('selfsynth.data', 'selfsynth.stages', "
        "'selfsynth.pipeline', 'selfsynth.prompts'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
