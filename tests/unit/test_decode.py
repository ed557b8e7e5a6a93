"""The decode loop's shortcuts give what the plain versions give: top-p over the most likely tokens
first, and a KV cache that writes into preallocated buffers."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import make_images, tiny_model

from selfsynth.models import decode
from selfsynth.models.vlm import VLM

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


def _full_sort_pick(logits, u, temperature, top_p):
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    probs, order = probs.sort(dim=-1, descending=True)
    probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    cdf = probs.double().cumsum(-1)
    x = u.to(torch.float64).unsqueeze(-1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, x, right=True).clamp_max(cdf.shape[-1] - 1).squeeze(-1)
    return order.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("scale", [8.0, 0.01])  # peaked (nucleus in the scan) and flat (falls back)
@pytest.mark.parametrize("top_p", [0.6, 0.95])
def test_top_p_over_the_scan_picks_what_a_full_sort_picks(scale, top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 2048, generator=g) * scale
    u = torch.rand(64, generator=g)
    assert torch.equal(decode.pick(logits, u, 0.7, top_p), _full_sort_pick(logits, u, 0.7, top_p))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    return VLM.load(tiny_model("llava", root), feature_cache=False), [
        str(p) for p in make_images(root / "images", 3)
    ]


@pytest.mark.parametrize("n,temperature", [(1, 0.0), (3, 1.0)])
def test_buffered_kv_cache_decodes_what_the_growing_one_does(vlm, monkeypatch, n, temperature):
    model, images = vlm
    prompts = ["describe the image .", "what is this ?", "explain why ."]
    kw = dict(n=n, temperature=temperature, top_p=0.9, max_new_tokens=12, seed=3, no_repeat_ngram=2)
    buffered = model.generate(images, prompts, **kw)
    assert type(decode._new_cache(model.model, 8).layers[0]) is decode._GrowingLayer
    plain = decode._new_cache
    monkeypatch.setattr(decode, "_new_cache", lambda m, capacity=0: plain(m, 0))
    assert model.generate(images, prompts, **kw) == buffered


def test_buffered_layer_grows_past_its_capacity_and_follows_row_selection():
    layer = decode._GrowingLayer(capacity=2)
    k = torch.arange(3 * 2 * 3 * 4, dtype=torch.float32).reshape(3, 2, 3, 4)
    layer.update(k, -k)
    layer.update(k[..., :1, :] + 100, -k[..., :1, :] - 100)
    assert layer.get_seq_length() == 4 and torch.equal(layer.keys[..., :3, :], k)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys[:, :, 3], k[[2, 0], :, 0] + 100)
    assert torch.equal(layer.values, -layer.keys)
    layer.batch_repeat_interleave(2)
    assert layer.keys.shape == (4, 2, 4, 4)
    layer.crop(-1)
    assert layer.get_seq_length() == 3 and layer.values.shape[-2] == 3
