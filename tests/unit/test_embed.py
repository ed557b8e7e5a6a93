"""The text encoder: unit vectors, determinism, semantic sanity and the two-level cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from selfsynth.errors import ConfigError  # noqa: E402
from selfsynth.models.embed import TextEncoder  # noqa: E402


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embed")


@pytest.fixture(scope="module")
def encoder(cache_dir):
    torch.set_num_threads(1)
    enc = TextEncoder(cache_dir=cache_dir, batch_size=8)
    yield enc
    enc.close()


def test_shapes_dtype_and_unit_norm(encoder):
    v = encoder.encode(["red crown", "a small bird with a forked tail", "x"])
    assert v.shape == (3, encoder.dim) == (3, 384)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_same_text_same_vector_and_different_texts_differ(encoder):
    v = encoder.encode(["yellow legs", "black mask", "yellow legs"])
    np.testing.assert_array_equal(v[0], v[2])
    assert not np.allclose(v[0], v[1], atol=1e-3)


def test_batching_does_not_change_vectors():
    texts = ["short", "a much longer phrase about wing bars and an eye ring", "medium length words"]
    a = TextEncoder(batch_size=1).encode(texts)
    b = TextEncoder(batch_size=64).encode(texts)  # padded together with longer texts
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_semantic_sanity(encoder):
    red, crimson, tail = encoder.encode(["red crown", "crimson crown", "forked tail"])
    assert red @ crimson > red @ tail


def test_cache_hit_avoids_the_model(encoder, cache_dir):
    texts = [f"cache probe phrase number {i}" for i in range(20)]
    before = encoder.model_calls
    first = encoder.encode(texts)
    assert encoder.model_calls - before == 3  # 20 misses in batches of 8
    encoder.encode(texts[::-1])
    assert encoder.model_calls - before == 3  # all in memory
    # A new encoder on the same folder reads the vectors from disk and never loads the model.
    fresh = TextEncoder(cache_dir=cache_dir, batch_size=8)
    again = fresh.encode(texts)
    assert fresh.model_calls == 0 and fresh._model is None
    np.testing.assert_array_equal(first, again)
    # Only the misses are encoded: one new text -> one forward pass of one text.
    fresh.encode([*texts, "one brand new phrase"])
    assert fresh.model_calls == 1
    fresh.close()


def test_prefix_is_part_of_the_cached_text(encoder, cache_dir):
    prefixed = TextEncoder(cache_dir=cache_dir, prefix="query: ")
    bare = encoder.encode(["white eye ring"])
    q = prefixed.encode(["white eye ring"])
    assert prefixed.model_calls == 1  # not served from the bare text's cache row
    assert not np.allclose(bare, q, atol=1e-4)
    prefixed.close()


def test_identity_names_the_model_and_changes_with_settings(encoder):
    assert encoder.path in encoder.identity
    other = TextEncoder(max_length=16)
    assert other.identity != encoder.identity


def test_bad_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        TextEncoder(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="config.json"):
        TextEncoder(str(tmp_path))
    with pytest.raises(TypeError):
        TextEncoder().encode("one string")


def test_a_resumed_cache_gives_the_vectors_of_a_fresh_run(tmp_path):
    """Texts encoded after a partial cache equal, bit for bit, the same texts encoded in one go."""
    texts = [f"a {'small ' * (i % 5)}bird with a red crown number {i}" for i in range(40)]
    fresh = TextEncoder(cache_dir=tmp_path / "fresh", batch_size=8).encode(texts)
    partial = TextEncoder(cache_dir=tmp_path / "resumed", batch_size=8)
    partial.encode(texts[::3])  # a run killed after caching some of them
    resumed = TextEncoder(cache_dir=tmp_path / "resumed", batch_size=8).encode(texts)
    assert np.array_equal(fresh, resumed)


def test_bf16_vectors_are_close_cached_apart_and_resume_bit_for_bit(tmp_path):
    """The bf16 encoder keeps its own cache entries, stays near fp32, and resumes exactly."""
    texts = [f"a {'small ' * (i % 13)}bird with a red crown number {i}" for i in range(24)]
    fp32 = TextEncoder(batch_size=8)
    bf16 = TextEncoder(cache_dir=tmp_path / "full", batch_size=8, precision="bf16")
    assert bf16.identity != fp32.identity
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert not np.array_equal(a, b)
    assert float((a * b).sum(axis=1).min()) > 0.99
    partial = TextEncoder(cache_dir=tmp_path / "resumed", batch_size=8, precision="bf16")
    partial.encode(texts[::3])
    resumed = TextEncoder(cache_dir=tmp_path / "resumed", batch_size=8, precision="bf16").encode(texts)
    assert np.array_equal(resumed, b)
