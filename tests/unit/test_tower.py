"""The EfficientNet tower: patch-token shape, frozen-ness, Auto registration and LLaVA save/load round trip."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import selfsynth  # noqa: E402,F401  (registers the tower)
from selfsynth.basevlm import tower as tower_model  # noqa: E402
from selfsynth.basevlm.tokenizer import train_tokenizer  # noqa: E402
from selfsynth.basevlm.tower_config import MODEL_TYPE, EfficientNetTowerConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_tower_gives_16_frozen_patch_tokens_at_128px():
    from transformers import AutoModel

    tower = AutoModel.from_config(EfficientNetTowerConfig(image_size=128))
    assert type(tower).__name__ == "EfficientNetTower"
    assert all(not p.requires_grad for p in tower.parameters())
    tower.train()  # batch-norm statistics must stay frozen anyway
    assert not any(m.training for m in tower.net.modules())
    x = torch.randn(2, 3, 128, 128, requires_grad=True)
    out = tower(x)
    assert out.last_hidden_state.shape == (2, 16, 1280)
    assert out.hidden_states[-1].shape == (2, 16, 1280)
    assert out.last_hidden_state.grad_fn is None  # no autograd through the frozen tower
    assert not any(k.startswith("net._fc") for k in tower.state_dict())  # classifier head dropped


def test_fine_features_add_the_stride16_map_under_each_token():
    tower = tower_model.EfficientNetTower(EfficientNetTowerConfig(fine_features=True, load_pretrained=False))
    assert tower.config.hidden_size == 1280 + 4 * 112
    x = torch.randn(1, 3, 128, 128)
    tokens = tower(x).last_hidden_state
    assert tokens.shape == (1, 16, 1728)
    coarse = tower.net.extract_features(x).flatten(2).transpose(1, 2)
    assert torch.allclose(tokens[..., :1280], coarse, atol=1e-5)


def test_patch_size_above_the_stride_pools_the_maps_to_the_token_grid():
    # 256 px at 64 px per token: the same 16 tokens as 128 px, each the mean of a 2 x 2 block
    # of the final map and a 4 x 4 block of the stride-16 map
    cfg = EfficientNetTowerConfig(image_size=256, patch_size=64, fine_features=True, load_pretrained=False)
    tower = tower_model.EfficientNetTower(cfg)
    assert cfg.num_patches == 16
    x = torch.randn(1, 3, 256, 256)
    tokens = tower(x).last_hidden_state
    assert tokens.shape == (1, 16, 1728)
    fmap, fine = tower._features(x)
    assert fmap.shape[-1] == 8 and fine.shape[-1] == 16
    assert torch.allclose(tokens[0, 0, :1280], fmap[0, :, :2, :2].mean((-1, -2)), atol=1e-5)
    first_cell = fine[0, :, :4, :4].mean((-1, -2))  # top-left of the token's 2 x 2 fine cells
    assert torch.allclose(tokens[0, 0, 1280:].reshape(112, 4)[:, 0], first_cell, atol=1e-5)


def test_colour_cells_add_the_mean_pixel_colour_under_each_token():
    cfg = EfficientNetTowerConfig(fine_features=True, normalize=True, colour_cells=4, load_pretrained=False)
    tower = tower_model.EfficientNetTower(cfg)
    assert cfg.hidden_size == 1280 + 4 * 112 + 3 * 16
    x = torch.zeros(1, 3, 128, 128)
    x[:, 0, :8, :8] = 2.0  # red in the top-left 8 x 8 cell of the first token only
    tokens = tower(x).last_hidden_state
    colour = tokens[0, :, -48:].reshape(16, 3, 4, 4)
    assert colour[0, 0, 0, 0] == 2.0 and colour[0, 1:].abs().sum() == 0
    assert colour[0, 0].sum() == 2.0 and colour[1:].abs().sum() == 0


def test_tower_loads_the_bundled_imagenet_weights():
    tower = tower_model.EfficientNetTower(EfficientNetTowerConfig())
    state = torch.load(tower_model.bundled_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(tower.net._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(tower.net._bn1.running_var, state["_bn1.running_var"])


def _tiny_llava(tmp_path):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from selfsynth.basevlm.build import build_processor

    tok = train_tokenizer(["a red crown and a black beak", "the bird is perched"] * 20, vocab_size=300)
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    cfg = LlavaConfig(
        vision_config=EfficientNetTowerConfig(load_pretrained=False),
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    proc = build_processor(tok, 128)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    return model, proc


def test_llava_with_tower_round_trips_through_auto_classes(tmp_path, monkeypatch):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, proc = _tiny_llava(tmp_path)
    assert f'"model_type": "{MODEL_TYPE}"' in (tmp_path / "config.json").read_text()

    # from_pretrained builds the tower on the meta device: it must not read the bundled weights.
    def no_bundled():
        raise AssertionError("bundled weights loaded during from_pretrained")

    monkeypatch.setattr(tower_model, "bundled_weights_path", no_bundled)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert all(not p.requires_grad for p in loaded.model.vision_tower.parameters())

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this bird."}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    batch = processor(images=[Image.new("RGB", (90, 70), (200, 30, 30))], text=[prompt], return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 128, 128)
    assert int((batch["input_ids"] == loaded.config.image_token_id).sum()) == 16
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, loaded(**batch).logits, atol=1e-5)
        out = loaded.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= batch["input_ids"].shape[1] + 3
