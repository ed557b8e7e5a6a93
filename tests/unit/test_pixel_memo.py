"""The pixel memo: same inputs as the processor gives, reuse per image, digests handed to the cache."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from tiny_models import make_images, tiny_model

from selfsynth.models import features, pixel_memo
from selfsynth.models.chat import open_image
from selfsynth.models.sft import batch_for
from selfsynth.models.vlm import VLM

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
Q = ["describe the image .", "what is the name of this bird ?", "explain why ."]
A = ["a bird", "a finch", "because"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("vlms")


@pytest.fixture(scope="module")
def images(root):
    return [str(p) for p in make_images(root / "images", 3)]


def _batch(vlm, images):
    return batch_for(vlm, [open_image(i) for i in images], Q, A)


@pytest.mark.parametrize("kind", ["llava", "qwen2vl", "idefics3"])
def test_memo_gives_the_processors_own_inputs(root, images, kind):
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


def test_cached_tower_takes_the_memos_digests(root, images, monkeypatch):
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


def test_changed_image_is_a_new_entry_and_memory_is_bounded(root, images):
    vlm = VLM.load(tiny_model("llava", root), feature_cache=False)
    memo = pixel_memo.attach(vlm.processor)
    _batch(vlm, images)
    row = next(iter(memo.entries.values()))[0]
    memo.entries.clear()
    memo.bytes, memo.max_bytes = 0, 2 * row.numel() * row.element_size()
    got = _batch(vlm, images)  # three new rows, room for two: the oldest goes
    assert len(memo.entries) == 2 and memo.bytes <= memo.max_bytes
    assert got["pixel_values"].shape[0] == 3
    im = open_image(images[0])
    flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert pixel_memo.image_digest(im) != pixel_memo.image_digest(flipped)
    assert pixel_memo.image_digest(im) == pixel_memo.image_digest(open_image(images[0]))
