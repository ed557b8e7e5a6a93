"""The frozen-tower feature cache: exact outputs, hit counting, disk store, tower identity, LRU bound."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import build_llava, make_images, tiny_model

from selfsynth.models.chat import open_image
from selfsynth.models.features import FeatureCache
from selfsynth.models.sft import batch_for
from selfsynth.models.vlm import VLM

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
KINDS = ["llava", "qwen2vl", "idefics3"]
Q = ["describe the image .", "what is the name of this bird ?", "explain why ."]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("vlms")


@pytest.fixture(scope="module")
def images(root):
    return [str(p) for p in make_images(root / "images", 3)]


def _logits(vlm, images):
    b = batch_for(vlm, [open_image(i) for i in images], Q, ["a bird", "a finch", "because"])
    with torch.no_grad():
        return vlm.model(**{k: v for k, v in b.items() if k != "labels"}).logits


@pytest.mark.parametrize("kind", KINDS)
def test_cache_is_exact_and_counts_hits(root, images, kind):
    path = tiny_model(kind, root)
    plain = VLM.load(path, feature_cache=False)
    cached = VLM.load(path)
    assert plain.feature_stats["misses"] == 0 and cached.tower is not None
    ref = _logits(plain, images)
    assert torch.equal(_logits(cached, images), ref)  # misses: computed in the same batch
    assert cached.feature_stats["misses"] == 3 and cached.feature_stats["hits"] == 0
    assert torch.equal(_logits(cached, images), ref)  # hits: the stored tensors
    assert cached.feature_stats["hits"] == 3 and cached.feature_stats["misses"] == 3
    kw = dict(n=3, temperature=1.0, max_new_tokens=5, seed=1, batch_size=3)
    assert cached.generate(images, Q, **kw) == plain.generate(images, Q, **kw)
    assert cached.feature_stats["misses"] == 3  # every later encoding of these images was a hit


def test_duplicates_in_a_batch_are_encoded_once(root, images):
    vlm = VLM.load(tiny_model("llava", root))
    vlm.generate([images[0]] * 4, ["describe"] * 4, max_new_tokens=2)
    assert vlm.feature_stats["misses"] == 1 and vlm.feature_stats["hits"] == 3


def test_disk_store_survives_a_reload_and_a_merge(tmp_path, root, images):
    path = tiny_model("llava", root)
    first = VLM.load(path, feature_cache_dir=tmp_path / "features")
    out = first.generate(images, Q, max_new_tokens=4)
    assert len(list((tmp_path / "features").rglob("*.safetensors"))) == 3
    second = VLM.load(path, feature_cache_dir=tmp_path / "features")
    assert second.generate(images, Q, max_new_tokens=4) == out
    assert second.feature_stats["disk_hits"] == 3 and second.feature_stats["misses"] == 0
    assert second.tower.tower_id == first.tower.tower_id
    # next round: a merged fine-tuned checkpoint has the same frozen tower, so it reuses the features
    from selfsynth.config import FinetuneConfig
    from selfsynth.records import QA

    exs = [QA(str(i), images[i], Q[i], "a bird", "x") for i in range(3)]
    cfg = FinetuneConfig(lora_r=2, lora_alpha=4, epochs=1.0, batch_size=3, micro_batch_size=3, augment=False)
    second.train_lora(exs, cfg, tmp_path / "ft", progress=False)
    merged = second.merge(tmp_path / "ft" / "adapter", tmp_path / "merged")
    third = VLM.load(merged, feature_cache_dir=tmp_path / "features")
    third.generate(images, Q, max_new_tokens=2)
    assert third.feature_stats["disk_hits"] == 3 and third.feature_stats["misses"] == 0


def test_a_different_tower_never_reuses_features(tmp_path, root, images):
    first = VLM.load(tiny_model("llava", root), feature_cache_dir=tmp_path / "features")
    first.generate(images[:1], Q[:1], max_new_tokens=2)
    other = VLM.load(build_llava(tmp_path / "other", seed=1), feature_cache_dir=tmp_path / "features")
    assert other.tower.tower_id != first.tower.tower_id
    other.generate(images[:1], Q[:1], max_new_tokens=2)
    assert other.feature_stats["disk_hits"] == 0 and other.feature_stats["misses"] == 1


def test_augmented_training_does_not_fill_the_cache(tmp_path, root, images):
    from selfsynth.config import FinetuneConfig
    from selfsynth.records import QA

    vlm = VLM.load(tiny_model("llava", root))
    exs = [QA(str(i), images[i], Q[i], "a bird", "x") for i in range(3)]
    cfg = FinetuneConfig(lora_r=2, lora_alpha=4, epochs=1.0, batch_size=3, micro_batch_size=3, augment=True)
    vlm.train_lora(exs, cfg, tmp_path, progress=False)
    assert vlm.feature_stats["entries"] == 0 and vlm.feature_stats["misses"] == 3


def test_lru_is_bounded_in_bytes():
    cache = FeatureCache(max_bytes=3 * 4 * 10)
    for i in range(5):
        cache.put(str(i), {"x": torch.zeros(10), "t": (None, torch.zeros(0))})
    assert cache.stats()["entries"] == 3 and cache.get("0") is None and cache.get("4") is not None
    with cache.no_store():
        cache.put("new", {"x": torch.zeros(1)})
    assert cache.get("new") is None


def test_disk_records_roundtrip(tmp_path):
    from safetensors import safe_open

    cache = FeatureCache(disk_dir=tmp_path)
    shared = torch.arange(6.0).view(2, 3)  # like hidden_states[-1] is last_hidden_state: stored once
    rec = {"a": shared, "b": None, "h": (None, torch.ones(2), shared)}
    cache.put("k" * 40, rec)
    assert cache.stats()["bytes"] == (6 + 2) * 4
    (path,) = tmp_path.rglob("*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert len(list(f.keys())) == 2
    back = FeatureCache(disk_dir=tmp_path).get("k" * 40)
    assert torch.equal(back["a"], shared) and back["b"] is None
    assert (
        back["h"][0] is None
        and torch.equal(back["h"][1], torch.ones(2))
        and torch.equal(back["h"][2], shared)
    )
