"""More VLM families through the backend: Qwen2.5-VL, Gemma 3, LLaVA-OneVision, InternVL.

For each tiny random model: greedy and sampled generation through ``load_backend`` (what the
stages call), one LoRA step on a fixed batch, and merge + reload giving the adapted model's logits.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_families import FAMILY_BUILDERS
from tiny_models import make_images, tiny_finetune_config, tiny_model

from selfsynth.config import FinetuneConfig, ModelConfig
from selfsynth.models.backend import Backend, load_backend
from selfsynth.models.chat import IGNORE, encode, open_image
from selfsynth.models.sft import batch_for
from selfsynth.records import QA

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
KINDS = list(FAMILY_BUILDERS)
Q = ["describe the image .", "what is the name of this bird ?", "explain why ."]
ANSWERS = ["a red finch", "a blue robin with white wing bars", "a brown sparrow"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def images(root):
    """Two squares of different sizes and a 2:1 wide image (more tiles for the tiling families)."""
    paths = [str(p) for p in make_images(root / "images", 2)]
    wide = np.random.default_rng(7).integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    Image.fromarray(wide).save(root / "images" / "wide.png")
    return [*paths, str(root / "images" / "wide.png")]


@pytest.fixture(scope="module")
def examples(images):
    return [QA(str(i), images[i % 3], Q[1], ANSWERS[i % 3], "x") for i in range(6)]


def _load(kind, root, **model):
    """The backend as a stage gets it (the frozen-tower feature cache on, in memory), encoding in fp32
    so that cached and uncached features compare exactly."""
    return load_backend(tiny_model(kind, root), ModelConfig(**{"encode_precision": "fp32", **model}))


def _cfg(**kw) -> FinetuneConfig:
    return tiny_finetune_config(**{"micro_batch_size": 6, **kw})  # fp32: exact comparisons below


def _loss(vlm, exs):
    return vlm.loss([e.image for e in exs], [e.question for e in exs], [e.answer for e in exs])


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_and_sampled_generation(root, images, kind):
    vlm = _load(kind, root)
    assert isinstance(vlm, Backend)
    greedy = vlm.generate(images, Q, n=2, max_new_tokens=6, batch_size=3)
    assert len(greedy) == 3 and all(len(o) == 2 and o[0] == o[1] for o in greedy)
    # the shared-prefill decoder agrees with transformers' own generate, one prompt at a time
    for im, q, got in zip(images, Q, greedy, strict=True):
        enc = encode(vlm.processor, [open_image(im)], [vlm.prompt(q)])
        ref = vlm.model.generate(**enc, max_new_tokens=6, do_sample=False)
        text = vlm.processor.tokenizer.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert got[0] == text.strip()
    kw = dict(n=3, temperature=1.0, max_new_tokens=6, seed=5)
    sampled = vlm.generate(images, Q, batch_size=3, **kw)
    assert len(sampled) == 3 and all(len(o) == 3 for o in sampled)
    assert sampled == vlm.generate(images, Q, batch_size=1, **kw)  # seeded per pair, not per batch
    assert sampled == vlm.generate(images, Q, batch_size=3, share_prefill=False, **kw)  # tiles repeated too
    assert len(set(sampled[0])) > 1  # a random tiny model at T=1: the samples differ


@pytest.mark.parametrize("kind", KINDS)
def test_one_lora_step_lowers_the_loss(tmp_path, root, examples, kind):
    vlm = _load(kind, root)
    batch = batch_for(
        vlm, [open_image(e.image) for e in examples[:3]], [e.question for e in examples[:3]], ANSWERS
    )
    tok = vlm.processor.tokenizer
    for labels in batch["labels"]:  # the answer, then the token generation stops at
        kept = labels[labels != IGNORE].tolist()
        assert kept[-1] in vlm.eos_ids and all(t not in vlm.eos_ids for t in kept[:-1])
        assert tok.decode(kept[:-1]).strip() in ANSWERS
    before = _loss(vlm, examples)
    info = vlm.train_lora(examples, _cfg(), tmp_path, progress=False)
    assert info["steps"] == 1 and info["loss_first"] == pytest.approx(before, rel=1e-5)
    assert _loss(vlm, examples) < before


@pytest.mark.parametrize("kind", KINDS)
def test_merge_and_reload_give_the_adapted_logits(tmp_path, root, examples, images, kind):
    vlm = _load(kind, root)
    vlm.train_lora(examples, _cfg(epochs=2.0), tmp_path / "ft", progress=False)
    batch = batch_for(
        vlm, [open_image(e.image) for e in examples[:3]], [e.question for e in examples[:3]], ANSWERS
    )
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    base = _load(kind, root, feature_cache=False)
    with torch.no_grad():
        ref = vlm.model(**inputs).logits
        assert not torch.allclose(ref, base.model(**inputs).logits, atol=1e-3)  # training changed the model
    merged = vlm.merge(tmp_path / "ft" / "adapter", tmp_path / "merged")
    again = load_backend(merged, ModelConfig(feature_cache=False))  # and the cache returned true features
    with torch.no_grad():
        got = again.model(**inputs).logits
    assert torch.allclose(ref, got, atol=1e-5)
    assert again.generate(images, Q, max_new_tokens=4) == vlm.generate(images, Q, max_new_tokens=4)


def test_qwen25vl_recipe_targets_every_decoder_linear(root):
    """configs/qwen25vl_cub.yaml names its LoRA targets; on Qwen2.5-VL's layout they are all-linear."""
    from pathlib import Path

    from selfsynth.config import load_config
    from selfsynth.models.lora import target_regex

    recipe = Path(__file__).parents[2] / "configs" / "qwen25vl_cub.yaml"
    cfg = load_config(recipe, ["data.root=/d", "model.path=/m"])
    model = _load("qwen25vl", root).model
    named = target_regex(model, cfg.finetune.target_modules)
    assert len(cfg.finetune.target_modules.split(",")) == 7
    assert named == target_regex(model, "all-linear")
    assert not cfg.model.feature_cache and cfg.finetune.train_projector
