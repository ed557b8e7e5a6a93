"""The vLLM engine's parts that need no vllm: registration, the install hint, seeds, LoRA eligibility.

Generation through real vLLM is tested in tests/vllm (``make test-vllm``).
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from selfsynth.config import ModelConfig
from selfsynth.errors import ConfigError
from selfsynth.models.backend import engine_names, load_backend
from selfsynth.models.vllm_engine import MERGE_RECORD, lora_source, request_seed


def test_vllm_is_a_known_engine():
    assert "vllm" in engine_names()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_names_the_install_command(tmp_path):
    with pytest.raises(ConfigError, match=r"make test-vllm.*\.\[vllm\]|\.\[vllm\].*make test-vllm"):
        load_backend(tmp_path, ModelConfig(path=str(tmp_path), engine="vllm"))


def test_request_seed_is_stable_and_spread():
    s = request_seed(0, (1, 2))
    assert s == request_seed(0, (1, 2))
    assert 0 <= s < 1 << 63  # vLLM adds the sample index to it for n > 1
    assert len({s, request_seed(1, (1, 2)), request_seed(0, (2, 1)), request_seed(0, (1, 3))}) == 4


def _merge(tmp_path, adapter_cfg: dict, base_exists: bool = True):
    base, adapter, merged = tmp_path / "base", tmp_path / "adapter", tmp_path / "merged"
    for d in (base, adapter, merged):
        d.mkdir()
    if base_exists:
        (base / "config.json").write_text("{}")
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_cfg))
    record = {"base": str(base), "adapter": str(adapter), "dtype": "torch.float32"}
    (merged / MERGE_RECORD).write_text(json.dumps(record))
    return base, adapter, merged


def test_plain_lora_adapter_is_served_as_a_lora_request(tmp_path):
    base, adapter, merged = _merge(tmp_path, {"r": 16, "modules_to_save": None})
    assert lora_source(merged) == (base, adapter, 16)


@pytest.mark.parametrize(
    ("adapter_cfg", "base_exists"),
    [
        ({"r": 8, "modules_to_save": ["model.multi_modal_projector"]}, True),  # a fully trained projector
        ({"r": 8}, False),  # the base checkpoint was deleted
    ],
)
def test_merged_weights_are_served_otherwise(tmp_path, adapter_cfg, base_exists):
    _, _, merged = _merge(tmp_path, adapter_cfg, base_exists)
    assert lora_source(merged) is None


def test_a_plain_checkpoint_has_no_lora_source(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert lora_source(tmp_path) is None
