"""A resumed run redoes what an edited input feeds: the concept file, the general data, retrained weights."""

from __future__ import annotations

import json
import os

import pytest

from selfsynth import pipeline
from selfsynth.config import RunConfig
from selfsynth.records import QA
from selfsynth.stages.concepts import run_concepts
from selfsynth.stages.context import Context
from selfsynth.stages.finetune import checkpoint_every, run_finetune


def _ctx(tmp_path, **finetune) -> Context:
    cfg = RunConfig()
    cfg.concepts.path = str(tmp_path / "concepts.json")
    for k, v in finetune.items():
        setattr(cfg.finetune, k, v)
    return Context(
        cfg=cfg, run_dir=tmp_path / "run", train=[], test=[], labels=["owl", "wren"], progress=False
    )


def test_an_edited_concept_file_redoes_the_concepts_stage(tmp_path):
    bank = {
        "owl": ["round face", "big eyes", "soft plumage"],
        "wren": ["cocked tail", "brown back", "thin bill"],
    }
    (tmp_path / "concepts.json").write_text(json.dumps(bank))
    ctx = _ctx(tmp_path)
    got, fp = run_concepts(ctx)
    assert got == bank and run_concepts(ctx) == (bank, fp)  # unchanged: the finished stage is reused
    bank["owl"][0] = "ear tufts"  # same path, same size class, new content
    (tmp_path / "concepts.json").write_text(json.dumps(bank))
    got2, fp2 = run_concepts(ctx)
    assert fp2 != fp and got2["owl"][0] == "ear tufts"
    assert json.loads((ctx.run_dir / "concepts" / "concepts.json").read_text())["owl"][0] == "ear tufts"


class FakeTrainer:
    """A backend that records trainings and writes the folders the stage checks."""

    def __init__(self) -> None:
        self.trained: list[dict] = []

    def train_lora(self, examples, cfg, out_dir, **kwargs):
        self.trained.append({"examples": [e.answer for e in examples], **kwargs})
        (out_dir / "adapter").mkdir(parents=True, exist_ok=True)
        return {"steps": 1}

    def merge(self, adapter_dir, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir


def test_edited_general_data_redoes_finetune_and_training_resumes(tmp_path, monkeypatch):
    general = tmp_path / "general.jsonl"
    general.write_text(json.dumps({"image": "a.png", "question": "What is here?", "answer": "a bird"}) + "\n")
    ctx = _ctx(tmp_path, general_data=str(general))
    fake = FakeTrainer()
    monkeypatch.setattr(ctx, "vlm", lambda path: fake)
    pairs = [QA("x#0", "x.png", "What bird?", "an owl", "owl")]
    merged, fp = run_finetune(ctx, 1, "base", pairs, "data-fp")
    assert len(fake.trained) == 1 and "a bird" in fake.trained[0]["examples"]
    assert fake.trained[0]["resume"] is True and fake.trained[0]["checkpoint_every"] >= 1
    assert run_finetune(ctx, 1, "base", pairs, "data-fp") == (merged, fp)
    assert len(fake.trained) == 1  # nothing changed: not trained again
    general.write_text(json.dumps({"image": "a.png", "question": "What is here?", "answer": "a wren"}) + "\n")
    _, fp2 = run_finetune(ctx, 1, "base", pairs, "data-fp")
    assert fp2 != fp and len(fake.trained) == 2 and "a wren" in fake.trained[1]["examples"]


def test_checkpoints_come_every_fifty_steps_or_a_tenth_of_a_short_training():
    cfg = RunConfig().finetune
    cfg.batch_size, cfg.epochs = 8, 1.0
    assert checkpoint_every(8 * 21, cfg) == 2
    assert checkpoint_every(8, cfg) == 1
    assert checkpoint_every(8 * 100_000, cfg) == 50


def _model_dir(tmp_path, seed: int):
    import torch
    from safetensors.torch import save_file

    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text('{"hidden_size": 4}')
    save_file(
        {"w": torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))}, str(d / "model.safetensors")
    )
    return d


@pytest.mark.parametrize("limit", [pipeline.DIGEST_LIMIT, 0])  # digested, then stamped by size + mtime
def test_retrained_weights_of_the_same_shapes_change_the_model_stamp(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(pipeline, "DIGEST_LIMIT", limit)
    d = _model_dir(tmp_path, 0)
    weights = d / "model.safetensors"
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))  # trained a while ago
    before = pipeline._model_stamp(str(d))
    assert pipeline._model_stamp(str(d)) == before
    size = weights.stat().st_size
    _model_dir(tmp_path, 1)  # retrained in place: same names, same shapes, same size
    assert weights.stat().st_size == size
    assert pipeline._model_stamp(str(d)) != before


def test_the_model_stamp_covers_subfolders_and_ignores_hidden_files(tmp_path):
    d = _model_dir(tmp_path, 0)
    before = pipeline._model_stamp(str(d))
    (d / ".cache").mkdir()
    (d / ".cache" / "x").write_text("download bookkeeping")
    assert pipeline._model_stamp(str(d)) == before
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "vocab.txt").write_text("a b")
    assert pipeline._model_stamp(str(d)) != before
    assert pipeline._model_stamp(str(tmp_path / "no-such-model")) == ""
