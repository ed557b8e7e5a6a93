"""Model cards of merged models: Hugging Face metadata, per-round metrics, recipe, use; written by the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import scripted_loop
import yaml

from selfsynth import pipeline
from selfsynth.config import RunConfig, to_dict
from selfsynth.models.merge import _copy_processor_files
from selfsynth.report.model_card import base_facts, front_matter, write_model_card

QUESTION = "What is the name of this bird? Explain why."


def _results(base_path: str, *, method: str = "ours", rounds: int = 3, evaluated: int = 1) -> dict:
    cfg = RunConfig(method=method, rounds=rounds)
    cfg.model.path = base_path
    cfg.data.format, cfg.data.root = "cub", "/data/CUB_200_2011"
    cfg.finetune.lora_r, cfg.finetune.lr = 64, 2e-4
    base = {
        "name": "base",
        "acc_substring": 0.125,
        "acc_strict": 0.0625,
        "ee": 0.2,
        "n": 80,
        "question": QUESTION,
    }
    done = [
        {
            "round": r,
            "acc_substring": 0.5 + 0.1 * r,
            "acc_strict": 0.4,
            "ee": 0.9,
            "n": 80,
            "question": QUESTION,
        }
        for r in range(1, evaluated + 1)
    ]
    return {"name": "cub-ours", "method": method, "config": to_dict(cfg), "base": base, "rounds": done}


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


@pytest.fixture
def hub_base(tmp_path) -> Path:
    """A base model as the Hugging Face cache lays it out, its card stating a license."""
    folder = tmp_path / "hub" / "models--llava-hf--llava-1.5-7b-hf" / "snapshots" / "0123abcd"
    return scripted_loop.make_base(folder, "---\nlicense: llama2\ntags: [vision]\n---\n# LLaVA\n")


def test_card_metadata_metrics_recipe_and_use(tmp_path, hub_base):
    merged = tmp_path / "round_2" / "finetune" / "merged"
    merged.mkdir(parents=True)
    write_model_card(merged, _results(str(hub_base)), 2)
    meta, body = _card(merged)
    assert meta["base_model"] == "llava-hf/llava-1.5-7b-hf" and meta["base_model_relation"] == "finetune"
    assert meta["license"] == "llama2" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "image-text-to-text" and "selfsynth" in meta["tags"]
    assert meta["datasets"] == ["CUB_200_2011"]
    assert "round 2 of 3" in body
    table = [line for line in body.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| Base model | 12.5 | 6.2 |")  # acc_substring, acc_strict in %
    assert table[2].startswith("| Round 1 | 60.0 | 40.0 |")
    assert table[3].startswith("| Round 2 (this model) | not evaluated yet")
    assert "- LoRA: r 64, alpha 256" in body and "lr 0.0002" in body  # the run's own settings
    assert "AutoModelForImageTextToText.from_pretrained(model_dir)" in body and '"merged"' in body
    assert json.dumps(QUESTION) in body and "import selfsynth" not in body

    # The round's evaluation finished: the card is refreshed with its numbers.
    write_model_card(merged, _results(str(hub_base), evaluated=2), 2)
    _, body = _card(merged)
    assert "not evaluated yet" not in body and "| Round 2 (this model) | 70.0 | 40.0 |" in body


def test_unknown_base_license_and_id_are_not_guessed(tmp_path):
    base = scripted_loop.make_base(tmp_path / "my-vlm")  # config.json only, no card
    merged = tmp_path / "merged"
    merged.mkdir()
    write_model_card(merged, _results(str(base)), 1)
    meta, body = _card(merged)
    assert "base_model" not in meta and meta["license"] == "unknown"
    assert "License: unknown" in body and "The local model `my-vlm` fine-tuned" in body


def test_base_facts_read_the_folder(tmp_path):
    named = scripted_loop.make_base(tmp_path / "a")
    (named / "config.json").write_text(json.dumps({"_name_or_path": "org/model-7b"}))
    assert base_facts(named)["hub_id"] == "org/model-7b"
    local = scripted_loop.make_base(tmp_path / "b")
    (local / "config.json").write_text(json.dumps({"_name_or_path": str(named)}))  # a path, not a Hub id
    assert base_facts(local)["hub_id"] is None
    other = scripted_loop.make_base(tmp_path / "c", "---\nlicense: other\nlicense_name: acme\n---\n")
    assert base_facts(other)["license"] == "other" and base_facts(other)["license_name"] == "acme"
    embedded = scripted_loop.make_base(tmp_path / "d")
    (embedded / "config.json").write_text(
        json.dumps({"vision_config": {"model_type": "selfsynth_efficientnet"}})
    )
    assert base_facts(embedded)["embedded"]
    assert front_matter("no metadata") == {} and front_matter("---\n: [\n---\n") == {}


def test_embedded_base_other_license_and_single_round_methods(tmp_path):
    base = scripted_loop.make_base(tmp_path / "base", "---\nlicense: other\nlicense_name: acme\n---\n")
    (base / "config.json").write_text(json.dumps({"vision_config": {"model_type": "selfsynth_efficientnet"}}))
    merged = tmp_path / "final_model"
    merged.mkdir()
    results = _results(str(base), method="nl", rounds=4)
    results["evaluated_on"] = "validation"
    write_model_card(merged, results, 1)
    meta, body = _card(merged)
    assert meta["license"] == "other" and meta["license_name"] == "acme"
    assert "round 1 of 1" in body  # nl is a one-round baseline whatever rounds says
    assert "import selfsynth" in body and '"final_model"' in body and "validation split" in body


def test_rewriting_touches_only_the_card(tmp_path, hub_base):
    merged = tmp_path / "merged"
    merged.mkdir()
    weights = merged / "model.safetensors"
    weights.write_bytes(b"weights")
    before = weights.stat().st_mtime_ns
    card = write_model_card(merged, _results(str(hub_base)), 1)
    stamp = card.stat().st_mtime_ns
    write_model_card(merged, _results(str(hub_base)), 1)  # same content: not rewritten
    assert card.stat().st_mtime_ns == stamp
    assert weights.read_bytes() == b"weights" and weights.stat().st_mtime_ns == before
    assert sorted(p.name for p in merged.iterdir()) == ["README.md", "model.safetensors"]  # no temp files


def test_merge_does_not_copy_the_base_card(tmp_path, hub_base):
    (hub_base / "tokenizer.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    _copy_processor_files(hub_base, out)
    assert (out / "tokenizer.json").is_file() and not (out / "README.md").exists()


@pytest.mark.slow  # the whole loop, with a scripted model: about ten seconds
def test_the_loop_writes_a_card_per_round_and_resume_redoes_nothing(tmp_path, monkeypatch):
    scripted_loop.register(monkeypatch)
    data = scripted_loop.make_data(tmp_path / "data")
    base = scripted_loop.make_base(tmp_path / "base", "---\nlicense: apache-2.0\n---\n")
    cfg = scripted_loop.config(data, base)
    run_dir = tmp_path / "run"
    results = pipeline.run(cfg, run_dir, progress=False)
    for rnd in (1, 2):
        meta, body = _card(run_dir / f"round_{rnd}" / "finetune" / "merged")
        assert meta["license"] == "apache-2.0" and f"round {rnd} of 2" in body
        rows = [line for line in body.splitlines() if line.startswith(("| Base", "| Round"))]
        assert len(rows) == rnd + 1 and "not evaluated yet" not in body
        acc = results["rounds"][rnd - 1]["acc_substring"]
        assert rows[-1].startswith(f"| Round {rnd} (this model) | {100 * acc:.1f} |")
    # A card is no input of any stage: edited by hand, a resume redoes nothing and writes it anew.
    card = run_dir / "round_2" / "finetune" / "merged" / "README.md"
    written = card.read_text()
    card.write_text(written + "\nedited by hand\n")
    stamps = scripted_loop.manifests(run_dir)
    pipeline.run(cfg, run_dir, progress=False)
    assert scripted_loop.manifests(run_dir) == stamps and card.read_text() == written
