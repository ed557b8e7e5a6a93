"""Expert concept sources: bullet parsing, the concept file and a local causal LM (the OpenAI-compatible
client has its own file, test_expert_openai.py)."""

from __future__ import annotations

import json

import pytest

from selfsynth.config import ConceptsConfig, OpenAIConfig
from selfsynth.errors import ConfigError, DataError, ExpertError
from selfsynth.experts import make_source
from selfsynth.experts.base import parse_bullets
from selfsynth.experts.file_source import FileSource

# ---------------------------------------------------------------- parse_bullets


def test_parse_bullets_styles_and_cleanup():
    text = """Sure! Distinctive visual features of a Scarlet Tanager:

## Plumage
- **Bright red** body.
* black wings
• Black tail;
1. Pale bill
2) dark eyes
- Size:
  - medium, about 16 cm
- bright red body
+ `grey` legs
Let me know if you need more."""
    assert parse_bullets(text) == [
        "Bright red body",
        "black wings",
        "Black tail",
        "Pale bill",
        "dark eyes",
        "medium, about 16 cm",
        "grey legs",
    ]


def test_parse_bullets_empty_and_no_bullets():
    assert parse_bullets("") == []
    assert parse_bullets("A red bird with a forked tail.\nIt sings.") == []
    assert parse_bullets("- \n-   .\n- Heading:") == []
    assert parse_bullets("**Bold** not a bullet\n2.5 cm long") == []


# ---------------------------------------------------------------- file source


def test_file_source_reads_both_layouts(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"gull": ["white head", "grey wings"], "tern": ["black cap"]}))
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"1": {"name": "gull", "visual_features": ["white head"]}}))
    cfg = ConceptsConfig(source="file", path=str(plain))
    assert make_source(cfg, None).concepts(["tern", "gull"]) == {
        "tern": ["black cap"],
        "gull": ["white head", "grey wings"],
    }
    assert FileSource(paper).concepts(["gull", "owl"]) == {"gull": ["white head"]}  # owl: left to validation
    # the dataset's own bank is used when concepts.path is empty
    assert make_source(ConceptsConfig(), None, default_path=str(paper)).concepts(["gull"])


def test_the_source_names_are_the_factorys_and_config_checks_against_them():
    from selfsynth.config import load_config
    from selfsynth.experts import SOURCES

    assert SOURCES == ("file", "openai", "hf")
    base = ["data.root=a", "model.path=b"]
    for name in SOURCES:
        assert load_config(None, [*base, f"concepts.source={name}"]).concepts.source == name
    with pytest.raises(
        ConfigError, match=r"concepts.source='opena' is not one of file, openai, hf.*'openai'"
    ):
        load_config(None, [*base, "concepts.source=opena"])
    with pytest.raises(ConfigError, match="is not one of file, openai, hf"):
        make_source(ConceptsConfig(source="bank"), None)
    for name in SOURCES:  # the factory has a branch for every listed name (each fails on its own settings)
        with pytest.raises((ConfigError, DataError)) as err:
            make_source(
                ConceptsConfig(source=name, path="", hf_model="", openai=OpenAIConfig(model="")), None
            )
        assert "is not one of" not in str(err.value)


def test_file_source_errors(tmp_path):
    with pytest.raises(ConfigError, match="concepts.path"):
        make_source(ConceptsConfig(source="file"), None)
    with pytest.raises(DataError, match="missing.json"):
        make_source(ConceptsConfig(source="file", path=str(tmp_path / "missing.json")), None)
    with pytest.raises(ConfigError, match="hf_model"):
        make_source(ConceptsConfig(source="hf"), None)
    with pytest.raises(ConfigError, match="{label}"):
        make_source(ConceptsConfig(source="openai", prompt="no placeholder"), None)


# ---------------------------------------------------------------- local causal LM


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 1-layer Llama whose final norm is zero: all logits tie, so greedy always emits token 0,
    which is the whole string "\\n- red crown". Deterministic output from a real model folder."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny_lm")
    vocab = {"\n- red crown": 0, "</s>": 1, "<unk>": 2, "list": 3, "features": 4}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(path)
    cfg = LlamaConfig(
        vocab_size=5,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=1,
        pad_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(path)
    return path


def test_hf_source_generates_parses_and_caches(tiny_lm, tmp_path):
    cache = tmp_path / "expert.sqlite"
    cfg = ConceptsConfig(source="hf", hf_model=str(tiny_lm), min_concepts=1)
    src = make_source(cfg, cache)
    src.max_new_tokens = 4
    assert src.concepts(["gull"]) == {"gull": ["red crown"]}
    assert src.requests_made == 1
    again = make_source(cfg, cache)
    again.max_new_tokens = 4
    assert again.concepts(["gull"]) == {"gull": ["red crown"]}
    assert again.requests_made == 0 and again._model is None  # served without loading the model


def test_hf_source_too_few_concepts_is_a_clear_error(tiny_lm):
    src = make_source(ConceptsConfig(source="hf", hf_model=str(tiny_lm), min_concepts=3), None)
    src.max_new_tokens = 4
    with pytest.raises(ExpertError, match=r"only 1 bullet points .*'gull'"):
        src.concepts(["gull"])


def test_hf_source_needs_a_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        make_source(ConceptsConfig(source="hf", hf_model=str(tmp_path)), None)
