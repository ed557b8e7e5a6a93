"""``model.engine=vllm`` against the HF backend on a tiny LLaVA: greedy parity, seeded samples, LoRA requests."""

from __future__ import annotations

import pytest

from selfsynth.config import FinetuneConfig, ModelConfig
from selfsynth.records import QA

QUESTIONS = ["describe the image .", "what is the name of this bird ?", "explain why .", "what is this ?"]


def _cfg(path, **kw) -> ModelConfig:
    return ModelConfig(path=str(path), engine="vllm", enforce_eager=True, **kw)


@pytest.fixture(scope="module")
def engines(hub_llava):
    from selfsynth.models.backend import load_backend
    from selfsynth.models.vlm import VLM

    v = load_backend(hub_llava, _cfg(hub_llava))
    yield v, VLM.load(hub_llava, feature_cache=False)
    v.close()


def _pairs(images):
    # every image with every question, plus a repeated pair (its second occurrence has its own stream)
    ims = [im for im in images for _ in QUESTIONS] + [images[0]]
    return ims, QUESTIONS * len(images) + [QUESTIONS[0]]


def test_greedy_equals_hf(engines, images):
    v, hf = engines
    ims, qs = _pairs(images)
    assert v.prompt(qs[0]) == hf.prompt(qs[0])
    got = v.generate(ims, qs, n=2, max_new_tokens=16)
    want = hf.generate(ims, qs, n=2, max_new_tokens=16)
    assert got == want
    assert all(len(g) == 2 and g[0] == g[1] for g in got)
    assert len({g[0] for g in got}) > 1  # the answers depend on the image and the question


def test_samples_are_n_per_pair_and_seeded(engines, images):
    v, _ = engines
    ims, qs = _pairs(images)
    kw = dict(n=3, temperature=1.0, top_p=0.9, max_new_tokens=12)
    a = v.generate(ims, qs, seed=0, **kw)
    assert len(a) == len(ims) and all(len(s) == 3 for s in a)
    assert any(len(set(s)) > 1 for s in a)  # n distinct draws, not n copies
    assert v.generate(ims, qs, seed=0, **kw) == a
    assert v.generate(ims, qs, seed=1, **kw) != a
    # a pair's samples depend on its content, not on the other requests of the call
    assert v.generate(ims[5:7], qs[5:7], seed=0, **kw) == a[5:7]
    assert a[-1] != a[0]  # a repeated pair draws a fresh stream


def test_seeded_samples_survive_a_full_token_budget(engines, images):
    # more prompt tokens than one engine step takes: a split prompt broke seeded sampling on CPU
    v, _ = engines
    ims, qs = images * 60, QUESTIONS * 60
    a = v.generate(ims, qs, n=2, temperature=1.0, max_new_tokens=2, seed=0)
    assert len(a) == 240 and all(len(s) == 2 for s in a)
    assert v.generate(ims[:3], qs[:3], n=2, temperature=1.0, max_new_tokens=2, seed=0) == a[:3]


def test_chat_and_repeat_guard_match_hf(engines, images):
    v, hf = engines
    msgs = [{"role": "user", "content": "describe the image ."}]
    assert v.chat(images[1], msgs, max_new_tokens=10) == hf.chat(images[1], msgs, max_new_tokens=10)
    kw = dict(n=1, max_new_tokens=16, no_repeat_ngram=2, allow_repeats=["finch"])
    assert v.generate(images, QUESTIONS, **kw) == hf.generate(images, QUESTIONS, **kw)


def _examples(images) -> list[QA]:
    answers = ["a small bird with a red crown .", "this is a finch .", "the beak is short .", "robin"]
    return [
        QA(id=f"qa{i}", image=str(im), question=q, answer=a, label="finch")
        for i, (im, q, a) in enumerate(zip(images, QUESTIONS, answers, strict=True))
    ]


@pytest.fixture(scope="module")
def merged(hub_llava, images, tmp_path_factory):
    """A LoRA adapter on the language model only (no projector), trained hard enough to change answers."""
    from selfsynth.models.vlm import VLM

    out = tmp_path_factory.mktemp("round")
    ft = FinetuneConfig(
        lora_r=8, lora_alpha=16, lora_dropout=0.0, lr=5e-2, epochs=6, batch_size=4, micro_batch_size=4
    )
    ft.train_projector = False
    ft.augment = False
    hf = VLM.load(hub_llava, feature_cache=False)
    hf.train_lora(_examples(images), ft, out, seed=0, progress=False)
    return hf.merge(out / "adapter", out / "merged")


def test_lora_request_reproduces_merged_model(merged, hub_llava, images):
    from selfsynth.models.backend import load_backend
    from selfsynth.models.vllm_engine import lora_source
    from selfsynth.models.vlm import VLM

    assert lora_source(merged) is not None
    ims, qs = _pairs(images)
    want = VLM.load(merged, feature_cache=False).generate(ims, qs, max_new_tokens=16)
    base = VLM.load(hub_llava, feature_cache=False).generate(ims, qs, max_new_tokens=16)
    assert want != base  # the adapter changed the answers, so the comparison below means something

    served = load_backend(merged, _cfg(merged))
    assert served.lora is not None
    got_lora = served.generate(ims, qs, max_new_tokens=16)
    served.close()
    assert got_lora == want

    # the merged checkpoint itself (vision tower in the llava-hf layout after the merge) loads in vLLM
    plain = load_backend(merged, _cfg(merged, vllm_lora=False))
    assert plain.lora is None
    got_merged = plain.generate(ims, qs, max_new_tokens=16)
    plain.close()
    assert got_merged == want
