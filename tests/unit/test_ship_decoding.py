"""The evaluated decoding ships with a round's merged model: plain ``model.generate`` decodes the same way."""

from __future__ import annotations

import json
import shutil

import torch
from tiny_models import make_images, tiny_model

from selfsynth.models.chat import open_image
from selfsynth.models.merge import ship_decoding
from selfsynth.models.vlm import VLM


def test_plain_generate_uses_the_shipped_decoding(tmp_path):
    from transformers import AutoModelForImageTextToText, GenerationConfig

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model("llava", tmp_path / "built"), model_dir)
    ship_decoding(model_dir, max_new_tokens=5, no_repeat_ngram=3)

    gen = GenerationConfig.from_pretrained(model_dir)
    assert (gen.do_sample, gen.num_beams, gen.max_new_tokens, gen.no_repeat_ngram_size) == (False, 1, 5, 3)
    exact = json.loads((model_dir / "selfsynth_decoding.json").read_text())
    assert exact["greedy"] and exact["no_repeat_ngram"] == 3 and exact["max_new_tokens"] == 5

    vlm = VLM.load(model_dir)  # our loader still reads the folder
    image = make_images(tmp_path / "images", 1)[0]
    batch = vlm.processor(
        images=[open_image(str(image))],
        text=[vlm.prompt("what bird is this ?")],
        return_tensors="pt",
    )
    plain = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    torch.manual_seed(0)
    shipped = plain.generate(**batch)
    torch.manual_seed(1)
    explicit = plain.generate(**batch, do_sample=False, max_new_tokens=5, no_repeat_ngram_size=3)
    assert torch.equal(shipped, explicit)
    assert shipped.shape[1] - batch["input_ids"].shape[1] <= 5


def test_no_guard_means_no_ngram_ban(tmp_path):
    from transformers import GenerationConfig

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model("llava", tmp_path / "built"), model_dir)
    ship_decoding(model_dir, max_new_tokens=7)
    gen = GenerationConfig.from_pretrained(model_dir)
    assert gen.max_new_tokens == 7 and not gen.no_repeat_ngram_size and gen.do_sample is False
