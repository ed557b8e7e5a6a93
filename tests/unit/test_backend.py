"""The Backend protocol and its engine registry: the HF VLM satisfies it, Context loads through it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import make_images, tiny_model

from selfsynth.config import ModelConfig, RunConfig
from selfsynth.errors import ConfigError
from selfsynth.models import backend
from selfsynth.models.backend import Backend, engine_names, load_backend, register_engine
from selfsynth.stages.context import Context


class ScriptedBackend:
    """A second engine: answers every prompt with its own text, n times."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def generate(self, images, prompts, *, n=1, **kwargs):
        return [[f"echo: {p}"] * n for p in prompts]

    def answer_logprobs(self, images, questions, answers, *, batch_size=32):
        return [0.0 for _ in answers]

    def loss(self, images, questions, answers):
        return 0.0

    def train_lora(self, examples, cfg, out_dir, *, seed=0, progress=True):
        return {}

    def merge(self, adapter_dir, out_dir):
        return Path(out_dir)

    def chat(self, image, messages, **gen_kwargs):
        return "echo"


def test_hf_vlm_is_a_backend(tmp_path):
    vlm = load_backend(tiny_model("llava", tmp_path), ModelConfig(feature_cache=False))
    assert isinstance(vlm, Backend)
    img = str(make_images(tmp_path / "img", 1)[0])
    out = vlm.generate([img], ["describe the image ."], n=2, temperature=1.0, max_new_tokens=4, seed=3)
    assert len(out) == 1 and len(out[0]) == 2


def test_unknown_engine_names_the_known_ones():
    with pytest.raises(ConfigError, match="did you mean 'hf'"):
        load_backend("x", ModelConfig(engine="hff"))


def test_a_registered_engine_reaches_the_stages(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "_ENGINES", dict(backend._ENGINES))
    register_engine("scripted", lambda path, cfg, cache_dir: ScriptedBackend(path))
    assert "scripted" in engine_names()
    cfg = RunConfig()
    cfg.model.engine = "scripted"
    ctx = Context(cfg=cfg, run_dir=tmp_path, train=[], test=[], labels=[], progress=False)
    got = ctx.vlm("some/model")
    assert isinstance(got, Backend) and got is ctx.vlm("some/model")
    assert got.generate(["img"], ["q"], n=2) == [["echo: q", "echo: q"]]
