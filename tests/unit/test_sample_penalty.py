"""``sample.outside_penalty`` and ``sample.max_outside``: candidates lose score per cited concept
outside the image's Z*, or lose eligibility past a count of them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from selfsynth.config import RunConfig, validate
from selfsynth.errors import ConfigError
from selfsynth.metrics.grounding import cite_phrases
from selfsynth.models import backend
from selfsynth.models.backend import register_engine
from selfsynth.records import QA, Example
from selfsynth.runs import stage_fp
from selfsynth.stages.context import Context
from selfsynth.stages.rs_score import penalized, zstar_counts
from selfsynth.stages.sample import run_sample

BANK = {
    "Tern": ["black cap", "orange beak", "forked tail"],
    "Arctic Tern": ["blood red beak", "grey wings"],
}
PHRASES = [p for ps in BANK.values() for p in ps]
Z_STAR = ["black cap", "forked tail"]
GROUNDED = "This is a Tern. It has a black cap and a forked tail."
# cites Z* too, plus a concept of its own class outside Z* and one of another class
HALLUCINATED = "This is a Tern. It has a black cap, an orange beak and grey wings."


def test_zstar_counts_and_penalized_scores():
    inside, outside = zstar_counts([GROUNDED, HALLUCINATED, "This is a Tern."], Z_STAR, PHRASES, cite_phrases)
    assert (inside, outside) == ([2, 1, 0], [0, 2, 0])
    assert penalized([1.5, 3.0, 0.0], [0, 2, 0], 1.0) == [1.5, 1.0, 0.0]
    assert penalized([1.5, 3.0], [0, 2], 0.0) == [1.5, 3.0]
    assert penalized([1.5, 3.0, 0.0], outside, 1.0, inside, 0.5) == [2.5, 1.5, 0.0]
    # matched like the grounding metrics: case and punctuation do not make a concept "outside"
    assert zstar_counts([GROUNDED], ["Black cap", "forked-tail"], PHRASES, cite_phrases) == ([2], [0])


class Scripted:
    """Every question gets the same two candidates: the grounded one first."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def generate(self, images, prompts, *, n=1, **kwargs):
        return [[GROUNDED, HALLUCINATED][:n] for _ in prompts]


class Encoder:
    """Puts the hallucinated answer nearer Z* than the grounded one, so the plain score prefers it."""

    VECS = {
        "black cap": [1, 0, 0, 0],
        "forked tail": [0, 1, 0, 0],
        "orange beak": [0, 0, 1, 0],
        GROUNDED: [1, 0, 1, 0],
        HALLUCINATED: [1, 1, 0, 0],
    }

    def encode(self, texts, progress=False):
        vecs = np.array([self.VECS.get(t, [0, 0, 0, 1]) for t in texts], dtype=np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _sample(tmp_path, monkeypatch, penalty: float, cap=-1, fallback="label", bonus=0.0, replay=False):
    monkeypatch.setattr(backend, "_ENGINES", dict(backend._ENGINES))
    register_engine("scripted", lambda path, cfg, cache_dir: Scripted(path))
    cfg = RunConfig()
    cfg.data.kind, cfg.model.engine, cfg.select.tau = "birds", "scripted", 1.0
    cfg.sample.questions, cfg.sample.samples, cfg.sample.outside_penalty = 1, 2, penalty
    cfg.sample.max_outside, cfg.sample.fallback, cfg.sample.cite_bonus = cap, fallback, bonus
    cfg.sample.replay_first = replay
    run_dir = tmp_path / f"run-{penalty}-{cap}-{bonus}-{replay}"
    train = [Example("img1", "/img1.png", "Tern", "train")]
    ctx = Context(cfg=cfg, run_dir=run_dir, train=train, test=[], labels=list(BANK), progress=False)
    ctx._encoder = Encoder()
    first = [
        QA("img1#0", "/img1.png", "Which species?", "This is a Tern.", "Tern", "simple"),
        QA("img1#1", "/img1.png", "Explain.", GROUNDED, "Tern", "explain"),
    ]
    accepted, fp = run_sample(ctx, 2, "model", {"img1": Z_STAR}, BANK, "inputs", first_round=first)
    (row,) = [
        json.loads(x) for x in (run_dir / "round_2" / "sample" / "part-00000.jsonl").read_text().splitlines()
    ]
    return cfg, accepted, fp, row


def test_the_penalty_turns_the_choice_to_the_grounded_candidate(tmp_path, monkeypatch):
    _, (plain,), _, raw = _sample(tmp_path, monkeypatch, 0.0)
    assert raw["scores"][1] > raw["scores"][0] and plain.answer == HALLUCINATED  # the paper's score
    assert "outside" not in raw
    _, (kept,), _, row = _sample(tmp_path, monkeypatch, 1.0)
    assert row["outside"] == [0, 2]
    assert row["scores"] == pytest.approx([raw["scores"][0], raw["scores"][1] - 2.0])
    assert kept.answer == GROUNDED and kept.meta["score"] == pytest.approx(raw["scores"][0])


def test_no_penalty_keeps_the_fingerprint_it_had_before_the_setting(tmp_path, monkeypatch):
    cfg, _, fp, _ = _sample(tmp_path, monkeypatch, 0.0)
    later = ("outside_penalty", "max_outside", "cite_bonus", "replay_first")
    before = {k: v for k, v in asdict(cfg.sample).items() if k not in later}
    settings = {**before, "method": "ours", "seed": cfg.seed, "tau": cfg.select.tau, "round": 2}
    assert fp == stage_fp(settings, "inputs")
    assert _sample(tmp_path, monkeypatch, 0.5)[2] != fp


def test_the_cite_bonus_pays_for_each_concept_of_zstar_cited(tmp_path, monkeypatch):
    _, (plain,), fp, raw = _sample(tmp_path, monkeypatch, 0.0)
    gap = raw["scores"][1] - raw["scores"][0]
    _, (kept,), fp_bonus, row = _sample(tmp_path, monkeypatch, 0.0, bonus=gap + 0.5)
    assert row["inside"] == [2, 1] and row["outside"] == [0, 2]
    assert row["scores"] == pytest.approx([raw["scores"][0] + 2 * (gap + 0.5), raw["scores"][1] + gap + 0.5])
    assert plain.answer == HALLUCINATED and kept.answer == GROUNDED and fp_bonus != fp


def test_replay_adds_round_one_explained_answers_to_the_round(tmp_path, monkeypatch):
    _, (won,), fp, _ = _sample(tmp_path, monkeypatch, 0.0)
    _, pairs, fp_replay, _ = _sample(tmp_path, monkeypatch, 0.0, replay=True)
    assert [(q.id, q.answer, q.kind) for q in pairs] == [
        (won.id, won.answer, won.kind),
        ("r1:img1#1", GROUNDED, "explain"),  # the name-only round-1 answer is not replayed
    ]
    assert fp_replay != fp


def test_a_negative_cite_bonus_is_refused():
    cfg = RunConfig()
    cfg.sample.cite_bonus = -0.5
    with pytest.raises(ConfigError, match="cite_bonus"):
        validate(cfg, require=())


def test_a_cap_on_outside_concepts_makes_hallucinating_candidates_ineligible(tmp_path, monkeypatch):
    _, (kept,), fp_cap, row = _sample(tmp_path, monkeypatch, 0.0, cap=0)
    assert row["outside"] == [0, 2] and row["names_label"] == [True, False]
    assert kept.answer == GROUNDED  # the plain score prefers the other one (test above)
    assert fp_cap != _sample(tmp_path, monkeypatch, 0.0)[2]
    _, (loose,), _, _ = _sample(tmp_path, monkeypatch, 0.0, cap=2)
    assert loose.answer == HALLUCINATED


def test_when_every_candidate_passes_the_cap_the_image_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(
        Scripted, "generate", lambda self, images, prompts, n=1, **kw: [[HALLUCINATED] * n for _ in prompts]
    )
    _, (kept,), _, row = _sample(tmp_path, monkeypatch, 0.0, cap=1)
    assert row["names_label"] == [False, False]
    assert kept.kind == "fallback" and "Tern" in kept.answer


def test_a_bad_cap_is_refused():
    cfg = RunConfig()
    cfg.sample.max_outside = -2
    with pytest.raises(ConfigError, match="max_outside"):
        validate(cfg, require=())


def test_a_negative_penalty_is_refused():
    cfg = RunConfig()
    cfg.sample.outside_penalty = -1.0
    with pytest.raises(ConfigError, match="outside_penalty"):
        validate(cfg, require=())


def test_synthesis_with_prefer_cited_keeps_the_grounded_answer(tmp_path, monkeypatch):
    """Round 1 through the stage: the answer citing Z* only beats the first one, which hallucinates."""
    from selfsynth.stages.synthesize import run_synthesize

    monkeypatch.setattr(backend, "_ENGINES", dict(backend._ENGINES))
    register_engine("scripted", lambda path, cfg, cache_dir: Scripted(path))
    monkeypatch.setattr(
        Scripted,
        "generate",
        lambda self, images, prompts, n=1, **kw: [[HALLUCINATED, GROUNDED][:n] for _ in prompts],
    )
    chosen = {}
    for prefer in (False, True):
        cfg = RunConfig()
        cfg.data.kind, cfg.model.engine = "birds", "scripted"
        cfg.synthesize.questions, cfg.synthesize.samples, cfg.synthesize.prefer_cited = 1, 2, prefer
        train = [Example("img1", "/img1.png", "Tern", "train")]
        ctx = Context(
            cfg=cfg, run_dir=tmp_path / str(prefer), train=train, test=[], labels=list(BANK), progress=False
        )
        (qa,), _ = run_synthesize(ctx, "model", {"img1": Z_STAR}, BANK, "inputs")
        chosen[prefer] = qa.answer
    assert chosen == {False: HALLUCINATED, True: GROUNDED}


def test_rule_answers_cite_every_prompt_concept_and_name_the_label(tmp_path, monkeypatch):
    """``synthesize.answers: rule``: explained answers list Z* in the drill form; name-only ones stay the model's."""
    from selfsynth.prompts import cited_answer
    from selfsynth.stages.synthesize import run_synthesize
    from selfsynth.text import names_label

    for kind in ("explain", "cot"):
        text = cited_answer("Tern", Z_STAR, kind)
        assert names_label(text, "Tern", list(BANK)) and cite_phrases(text, PHRASES) == Z_STAR
    assert cited_answer("Tern", ["black cap"], "cot", "dog").startswith("The dog has black cap.")

    monkeypatch.setattr(backend, "_ENGINES", dict(backend._ENGINES))
    register_engine("scripted", lambda path, cfg, cache_dir: Scripted(path))
    asked = []

    def generate(self, images, prompts, n=1, **kw):
        asked.extend(prompts)
        return [[HALLUCINATED] for _ in prompts]

    monkeypatch.setattr(Scripted, "generate", generate)
    got, fps, generated = {}, {}, {}
    for answers, weights in (("model", [0, 1, 0]), ("rule", [0, 1, 0]), ("rule", [1, 0, 0])):
        cfg = RunConfig()
        cfg.data.kind, cfg.model.engine = "birds", "scripted"
        cfg.synthesize.questions, cfg.synthesize.answers, cfg.synthesize.pool_weights = 1, answers, weights
        train = [Example("img1", "/img1.png", "Tern", "train")]
        run_dir = tmp_path / f"{answers}{weights[0]}"
        ctx = Context(cfg=cfg, run_dir=run_dir, train=train, test=[], labels=list(BANK), progress=False)
        (qa,), fps[answers, weights[0]] = run_synthesize(ctx, "model", {"img1": Z_STAR}, BANK, "inputs")
        got[answers, weights[0]] = qa.answer
        generated[answers, weights[0]], asked[:] = len(asked), []
    assert got["model", 0] == HALLUCINATED and got["rule", 1] == HALLUCINATED  # name-only: the model's
    assert got["rule", 0] == cited_answer("Tern", Z_STAR, "explain")
    assert fps["rule", 0] != fps["model", 0]
    # Answers written by rule are not sampled first; name-only prompts still are.
    assert generated == {("model", 0): 1, ("rule", 0): 0, ("rule", 1): 1}
