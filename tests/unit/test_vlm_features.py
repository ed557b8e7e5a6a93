"""The frozen-tower feature cache (exact outputs, hit counting, disk store, tower identity, LRU bound)
and the pixel memo in front of it (the processor's own inputs, reuse per image, digests handed on)."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from tiny_models import build_llava, make_images, tiny_model

from selfsynth.models import features, pixel_memo
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


def _batch(vlm, images):
    return batch_for(vlm, [open_image(i) for i in images], Q, ["a bird", "a finch", "because"])


def _logits(vlm, images):
    b = _batch(vlm, images)
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


@pytest.mark.parametrize("kind", KINDS)
def test_pixel_memo_gives_the_processors_own_inputs(root, images, kind):
    path = tiny_model(kind, root)
    plain = VLM.load(path, pixel_memo_bytes=0, feature_cache=False)
    memo_vlm = VLM.load(path, feature_cache=False)
    memo = pixel_memo.attach(memo_vlm.processor)
    want = _batch(plain, images)
    for order in (images, images[::-1], images):  # first call fills, later calls reuse
        got = _batch(memo_vlm, order)
        ref = _batch(plain, order)
        assert got.keys() == ref.keys()
        for k in ref:
            assert torch.equal(got[k], ref[k]), k
    assert want["input_ids"].shape == _batch(memo_vlm, images)["input_ids"].shape
    if kind == "llava":  # one fixed-size row per image: memoised
        assert memo.supported is True and memo.misses == 3 and memo.hits == 9
    else:  # patch grids / image splitting: detected and left alone
        assert memo.supported is False


def test_cached_tower_takes_the_pixel_memos_digests(root, images, monkeypatch):
    vlm = VLM.load(tiny_model("llava", root))
    with torch.no_grad():
        first = vlm.model(**{k: v for k, v in _batch(vlm, images).items() if k != "labels"}).logits
    calls = []
    real = features.tensor_digest
    monkeypatch.setattr(features, "tensor_digest", lambda t: calls.append(t.shape) or real(t))
    with torch.no_grad():
        again = vlm.model(**{k: v for k, v in _batch(vlm, images).items() if k != "labels"}).logits
    assert torch.equal(first, again)
    assert vlm.features.hits == 3
    assert not [s for s in calls if len(s) == 4]  # no pixel rows were hashed again
    copy = _batch(vlm, images)
    copy["pixel_values"] = copy["pixel_values"].clone()  # another tensor: hashed, not trusted
    with torch.no_grad():
        vlm.model(**{k: v for k, v in copy.items() if k != "labels"})
    assert len([s for s in calls if len(s) == 4]) == 3


def test_pixel_memo_changed_image_is_a_new_entry_and_memory_is_bounded(root, images):
    vlm = VLM.load(tiny_model("llava", root), feature_cache=False)
    memo = pixel_memo.attach(vlm.processor)
    _batch(vlm, images)
    stats = memo.rows.stats()
    memo.rows.clear()
    memo.rows.max_bytes = 2 * stats["bytes"] // stats["entries"]
    got = _batch(vlm, images)  # three new rows, room for two: the oldest goes
    assert memo.rows.stats()["entries"] == 2 and memo.rows.stats()["bytes"] <= memo.rows.max_bytes
    assert got["pixel_values"].shape[0] == 3
    im = open_image(images[0])
    flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert pixel_memo.image_digest(im) != pixel_memo.image_digest(flipped)
    assert pixel_memo.image_digest(im) == pixel_memo.image_digest(open_image(images[0]))
