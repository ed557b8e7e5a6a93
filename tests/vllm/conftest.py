"""The vLLM engine's tests: real vLLM on CPU, run by ``make test-vllm`` in .venv-vllm.

In an environment without vllm (the project's .venv) every test here is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "unit")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache; ample for the tiny model

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config, items):
    if HAVE_VLLM:
        return
    skip = pytest.mark.skip(reason="vllm is not installed here; `make test-vllm` runs these in .venv-vllm")
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def hub_llava(tmp_path_factory) -> Path:
    from tiny_llava import build_hub_llava

    return build_hub_llava(tmp_path_factory.mktemp("models") / "llava")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    from tiny_models import make_images

    return make_images(tmp_path_factory.mktemp("images"), 4)
