"""IB concept selection: the fast scores equal the formula evaluated directly, and the keep rule."""

from __future__ import annotations

import time

import numpy as np
import pytest

from selfsynth.errors import ConfigError, DataError
from selfsynth.stages.ib_score import ib_scores, select, select_concepts


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def direct_scores(descs: list[np.ndarray], concepts: np.ndarray, cands: list[list[int]], tau: float):
    """The formula as written, in float64, re-concatenating the other images for every image."""
    out = []
    for k, own in enumerate(descs):
        others = [d for j, d in enumerate(descs) if j != k]
        neg_descs = np.concatenate(others).astype(np.float64) if others else np.zeros((0, concepts.shape[1]))
        row = []
        for j in cands[k]:
            z = concepts[j].astype(np.float64)
            neg = np.exp(neg_descs @ z / tau).sum()
            pos = np.exp(own.astype(np.float64) @ z / tau)
            row.append(np.log(pos / (pos + neg)).sum())
        out.append(np.array(row))
    return out


def _world(rng, n_classes=4, per_class=5, n_concepts=6, m=7, d=32, spread=0.6):
    """Descriptions that lean towards their class's concepts, so scores are not all alike."""
    concepts = _unit(rng.normal(size=(n_classes * n_concepts, d)))
    descs, cands = [], []
    for c in range(n_classes):
        own = list(range(c * n_concepts, (c + 1) * n_concepts))
        for _ in range(per_class):
            picks = rng.choice(own, size=m)
            descs.append(_unit(concepts[picks] + spread * rng.normal(size=(m, d))))
            cands.append(own)
    return np.stack(descs), concepts, cands


@pytest.mark.parametrize("tau", [0.1, 0.05, 1.0])
def test_matches_direct_formula(tau):
    rng = np.random.default_rng(0)
    descs, concepts, cands = _world(rng)
    fast = ib_scores(descs, concepts, cands, tau)
    ref = direct_scores(list(descs), concepts, cands, tau)
    assert len(fast) == len(ref)
    for f, r in zip(fast, ref, strict=True):
        assert f.dtype == np.float32
        np.testing.assert_allclose(f, r, rtol=1e-4)


def test_matches_direct_formula_on_pure_noise_and_odd_candidates():
    rng = np.random.default_rng(1)
    descs = _unit(rng.normal(size=(9, 5, 16)))
    concepts = _unit(rng.normal(size=(11, 16)))
    cands = [list(rng.choice(11, size=rng.integers(1, 6), replace=False)) for _ in range(9)]
    for f, r in zip(
        ib_scores(descs, concepts, cands, 0.1), direct_scores(list(descs), concepts, cands, 0.1), strict=True
    ):
        np.testing.assert_allclose(f, r, rtol=1e-4)


def test_ragged_descriptions_match_direct_formula():
    rng = np.random.default_rng(2)
    descs_arr, concepts, cands = _world(rng)
    ragged = [d[: 1 + i % d.shape[0]] for i, d in enumerate(descs_arr)]
    fast = ib_scores(ragged, concepts, cands, 0.1)
    for f, r in zip(fast, direct_scores(ragged, concepts, cands, 0.1), strict=True):
        np.testing.assert_allclose(f, r, rtol=1e-4)


def test_own_descriptions_dominating_stays_finite_and_exact(caplog):
    """Own terms nearly all of the total: log(e^L - e^B) would cancel to -inf without the direct path."""
    caplog.set_level("DEBUG", logger="selfsynth.stages.ib_score")
    concepts = _unit(np.eye(4, 8) + 0.01)
    descs = np.stack(
        [np.repeat(concepts[i : i + 1], 3, axis=0) for i in range(4)]
    )  # each image = its concept
    descs[3] = _unit(descs[3] + 0.3 * np.eye(3, 8, k=4))  # one image less extreme
    cands = [[0, 1, 2, 3]] * 4
    for tau in (0.1, 0.02):
        fast = ib_scores(descs, concepts, cands, tau)
        ref = direct_scores(list(descs), concepts, cands, tau)
        for f, r in zip(fast, ref, strict=True):
            assert np.isfinite(f).all()
            np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-9)
    assert "summed directly" in caplog.text  # the ill-conditioned path really ran


def test_single_image_has_no_negatives_so_scores_are_zero():
    rng = np.random.default_rng(3)
    descs = _unit(rng.normal(size=(1, 4, 8)))
    concepts = _unit(rng.normal(size=(3, 8)))
    (scores,) = ib_scores(descs, concepts, [[2, 0]], 0.1)
    np.testing.assert_array_equal(scores, np.zeros(2, np.float32))


def test_bad_inputs_are_clear_errors():
    descs = np.zeros((2, 3, 4), np.float32)
    concepts = np.zeros((5, 4), np.float32)
    with pytest.raises(DataError, match="2 images"):
        ib_scores(descs, concepts, [[0]], 0.1)
    with pytest.raises(DataError, match="image 1 index outside"):
        ib_scores(descs, concepts, [[0], [5]], 0.1)
    with pytest.raises(DataError, match="dim"):
        ib_scores(descs, np.zeros((5, 6), np.float32), [[0], [1]], 0.1)
    with pytest.raises(ConfigError, match="tau"):
        ib_scores(descs, concepts, [[0], [1]], 0.0)


def test_select_keeps_above_mean_plus_k_std_best_first():
    s = np.array([0.0, 5.0, 1.0, 4.0, 0.5, 6.0])
    # mean 2.75, std ~2.32: threshold at k=0.4 is ~3.68
    assert select(s, 0.4, 1) == [5, 1, 3]
    assert select(s, 0.0, 1) == [5, 1, 3]
    assert select(s, 1.5, 1) == [5]


def test_select_min_keep_and_fewer_candidates():
    s = [1.0, 9.0, 1.0, 1.0]
    assert select(s, 0.4, 1) == [1]
    assert select(s, 0.4, 3) == [1, 0, 2]  # ties broken by position
    assert select([2.0, 3.0], 0.4, 3) == [1, 0]
    assert select([], 0.4, 3) == []
    assert select([1.0, 1.0, 1.0], 0.0, 2) == [0, 1]  # all equal: none strictly above the mean


def test_select_concepts_returns_positions_and_scores():
    rng = np.random.default_rng(4)
    descs, concepts, cands = _world(rng, spread=0.2)
    positions, scores = select_concepts(descs, concepts, cands, tau=0.1, k=0.4, min_keep=3)
    assert len(positions) == len(scores) == len(cands)
    for pos, sc in zip(positions, scores, strict=True):
        assert len(pos) >= 3
        assert list(sc[pos]) == sorted(sc[pos], reverse=True)


@pytest.mark.slow
def test_cub_scale_under_90_seconds():
    """6,000 images x 30 descriptions, 200 classes x 15 concepts, d=384 (the CUB setting)."""
    rng = np.random.default_rng(5)
    n_classes, per_class, n_c, m, d = 200, 30, 15, 30, 384
    concepts = _unit(rng.normal(size=(n_classes * n_c, d)))
    labels = np.repeat(np.arange(n_classes), per_class)
    descs = np.empty((len(labels), m, d), np.float32)
    for i, c in enumerate(labels):
        base = concepts[c * n_c + rng.integers(0, n_c, size=m)]
        descs[i] = _unit(base + 0.8 * rng.normal(size=(m, d)).astype(np.float32))
    cands = [list(range(c * n_c, (c + 1) * n_c)) for c in labels]
    t0 = time.perf_counter()
    scores = ib_scores(descs, concepts, cands, 0.1)
    elapsed = time.perf_counter() - t0
    assert len(scores) == 6000 and all(s.shape == (15,) and np.isfinite(s).all() for s in scores)
    assert elapsed < 90, f"ib_scores took {elapsed:.1f} s at CUB scale"
    for i in (0, 2999, 5999):  # spot-check three images against the formula over all other images
        others = np.concatenate([descs[:i], descs[i + 1 :]]).reshape(-1, d).astype(np.float64)
        z = concepts[cands[i]].astype(np.float64)
        neg = np.exp(others @ z.T / 0.1).sum(0)
        pos = np.exp(descs[i].astype(np.float64) @ z.T / 0.1)
        np.testing.assert_allclose(scores[i], np.log(pos / (pos + neg)).sum(0), rtol=1e-4)
