"""Training batches from per-example rows (``models.batching``) and bf16 encoding of cache misses."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tiny_families  # noqa: F401  (adds the other families to tiny_models.BUILDERS)
import torch
from tiny_models import BUILDERS, make_images, tiny_finetune_config, tiny_model

from selfsynth.config import ModelConfig
from selfsynth.models.backend import load_backend
from selfsynth.models.batching import RowCache
from selfsynth.models.chat import open_image
from selfsynth.models.sft import batch_for
from selfsynth.models.vlm import VLM
from selfsynth.records import QA

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
QUESTIONS = ["what is the name of this bird ?", "describe the image .", "explain why ."]
ANSWERS = ["a red finch", "a blue robin with white wing bars and a long tail", "brown"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("batching")


@pytest.fixture(scope="module")
def examples(root):
    images = [str(p) for p in make_images(root / "images", 5)]
    return [QA(str(i), images[i % 5], QUESTIONS[i % 3], ANSWERS[i % 3], "x") for i in range(12)]


def _load(kind, root):
    return load_backend(tiny_model(kind, root), ModelConfig(encode_precision="fp32"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        not torch.is_tensor(v) or (v.shape == b[k].shape and torch.equal(v, b[k])) for k, v in a.items()
    )


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_batches_equal_whole_batches_or_fall_back(root, examples, kind):
    """Every family: each batch is exactly what ``batch_for`` builds, cached or not."""
    vlm = _load(kind, root)
    rows = RowCache(vlm, examples, max_length=256)
    rng = np.random.default_rng(0)
    for _ in range(4):
        idx = rng.choice(len(examples), 4, replace=False).tolist()
        want = batch_for(
            vlm,
            [open_image(examples[i].image) for i in idx],
            [examples[i].question for i in idx],
            [examples[i].answer for i in idx],
            max_length=256,
            pad_multiple=16,
        )
        assert _same(rows.batch(idx, pad_multiple=16), want)
    assert rows.enabled is not None
    if kind == "llava":  # the embedded model's family: the fast path is the one in use
        assert rows.enabled


def test_a_processor_whose_rows_differ_turns_the_cache_off(root, examples, monkeypatch):
    vlm = _load("llava", root)
    rows = RowCache(vlm, examples, max_length=256)
    real = rows._assemble

    def wrong(idx, pad_multiple):
        out = real(idx, pad_multiple)
        out["pixel_values"] = out["pixel_values"] + 1  # as if images were processed another way
        return out

    monkeypatch.setattr(rows, "_assemble", wrong)
    first = rows.batch([0, 1, 2], 1)
    assert rows.enabled is False
    assert _same(
        rows.batch([3, 4], 1),
        batch_for(
            vlm,
            [open_image(examples[i].image) for i in (3, 4)],
            [examples[i].question for i in (3, 4)],
            [examples[i].answer for i in (3, 4)],
            max_length=256,
        ),
    )
    assert first["input_ids"].shape[0] == 3


def test_training_with_and_without_kept_rows_is_identical(root, examples, tmp_path, monkeypatch):
    cfg = tiny_finetune_config(epochs=3.0, batch_size=4, micro_batch_size=2)
    logs = {}
    for mode in ("kept", "rebuilt"):
        if mode == "rebuilt":
            monkeypatch.setattr("selfsynth.models.sft.RowCache", lambda *a: None)
        vlm = _load("llava", root)
        vlm.train_lora(examples, cfg, tmp_path / mode, progress=False)
        lines = (tmp_path / mode / "train_log.jsonl").read_text().splitlines()
        logs[mode] = [(r["loss"], r["grad_norm"], r["tokens"]) for r in map(json.loads, lines)]
    assert len(logs["kept"]) == 9 and logs["kept"] == logs["rebuilt"]


def test_bf16_encoding_is_cached_apart_and_handed_on_in_fp32(root, examples):
    path = tiny_model("llava", root)
    images = [examples[i].image for i in range(3)]
    feats = {}
    for precision in ("fp32", "bf16"):
        vlm = VLM.load(path, encode_precision=precision)
        tower = vlm.model.model.vision_tower
        pixels = vlm.processor.image_processor(images=[open_image(i) for i in images], return_tensors="pt")
        with torch.no_grad():
            out = tower(pixels["pixel_values"])
        feats[precision] = (out.last_hidden_state, vlm.tower.tower_id)
    (f32, id32), (b16, id16) = feats["fp32"], feats["bf16"]
    assert b16.dtype == torch.float32 and id32 != id16
    assert not torch.equal(f32, b16)
    assert (b16 - f32).norm() / f32.norm() < 0.05
