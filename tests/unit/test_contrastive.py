"""Rejection-sampling score and negative sets."""

from __future__ import annotations

import numpy as np
import pytest

from selfsynth.errors import ConfigError, DataError
from selfsynth.stages.rs_score import negatives, rs_score, rs_scores


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def direct(y: np.ndarray, pos: np.ndarray, neg: np.ndarray, tau: float) -> float:
    y, pos, neg = (a.astype(np.float64) for a in (y, pos, neg))
    neg_sum = np.exp(neg @ y / tau).sum()
    e = np.exp(pos @ y / tau)
    return float(np.log(e / (e + neg_sum)).sum())


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_direct_formula(tau):
    rng = np.random.default_rng(0)
    pos, neg = _unit(rng.normal(size=(4, 16))), _unit(rng.normal(size=(9, 16)))
    answers = _unit(rng.normal(size=(6, 16)))
    batch = rs_scores(answers, pos, neg, tau)
    assert batch.shape == (6,) and batch.dtype == np.float32
    for y, b in zip(answers, batch, strict=True):
        ref = direct(y, pos, neg, tau)
        assert rs_score(y, pos, neg, tau) == pytest.approx(ref, rel=1e-5)
        assert b == pytest.approx(ref, rel=1e-5)


def test_no_negatives_gives_zero_and_no_positives_gives_zero():
    rng = np.random.default_rng(1)
    y, pos = _unit(rng.normal(size=8)), _unit(rng.normal(size=(3, 8)))
    assert rs_score(y, pos, np.zeros((0, 8), np.float32), 0.1) == 0.0
    assert rs_score(y, np.zeros((0, 8), np.float32), pos, 0.1) == 0.0


def test_small_tau_does_not_overflow():
    rng = np.random.default_rng(2)
    pos, neg = _unit(rng.normal(size=(3, 8))), _unit(rng.normal(size=(5, 8)))
    s = rs_score(pos[0], pos, neg, 0.001)  # exponents up to 1000: e^1000 overflows float64
    assert np.isfinite(s) and s <= 0.0


def test_closer_to_positives_scores_higher():
    rng = np.random.default_rng(3)
    pos, neg = _unit(rng.normal(size=(3, 32))), _unit(rng.normal(size=(6, 32)))
    on_topic = _unit(pos.mean(0))
    off_topic = _unit(neg.mean(0))
    halfway = _unit(pos.mean(0) + neg.mean(0))
    s = rs_scores(np.stack([on_topic, halfway, off_topic]), pos, neg, 0.1)
    assert s[0] > s[1] > s[2]


def test_bad_tau_is_a_config_error():
    with pytest.raises(ConfigError, match="tau"):
        rs_score(np.ones(2), np.ones((1, 2)), np.ones((1, 2)), 0.0)


BANK = {
    "gull": ["white head", "grey wings", "yellow bill"],
    "tern": ["black cap", "forked tail", "grey wings"],
    "crow": ["black plumage", "stout bill"],
}


def test_negative_modes_give_the_right_sets():
    selected = ["white head", "yellow bill"]
    assert negatives("class_rest", "gull", selected, BANK) == ["grey wings"]
    assert negatives("all_rest", "gull", selected, BANK) == [
        "grey wings",
        "black cap",
        "forked tail",
        "black plumage",
        "stout bill",
    ]
    assert negatives("all", "gull", selected, BANK) == [
        "white head",
        "grey wings",
        "yellow bill",
        "black cap",
        "forked tail",
        "black plumage",
        "stout bill",
    ]
    # a phrase Z* shares with another class is excluded everywhere except in "all"
    assert "grey wings" not in negatives("all_rest", "tern", ["grey wings"], BANK)
    assert negatives("class_rest", "crow", ["black plumage", "stout bill"], BANK) == []


def test_negative_errors():
    with pytest.raises(ConfigError, match="class_rest"):
        negatives("everything", "gull", [], BANK)
    with pytest.raises(DataError, match="'owl'"):
        negatives("class_rest", "owl", [], BANK)
