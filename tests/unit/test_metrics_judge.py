"""The optional LLM judge against a local OpenAI-compatible server: answers, caching, retries,
malformed bodies, the key kept out of every message, and its wiring into the evaluate stage."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from selfsynth.config import EvaluateConfig, OpenAIConfig, RunConfig, load_config
from selfsynth.experts.openai_client import OpenAIClient
from selfsynth.metrics.answers import answer_metrics
from selfsynth.metrics.judge import Judge, JudgeError, make_judge, parse_score, parse_yes_no

SECRET = "sk-test-not-a-real-key-123"


def verdict(prompt: str) -> str:
    """The judge's answer: "Yes." to the EE question when it mentions a black cap, else "No"; "8" to CS."""
    if "Reply with only yes" in prompt:
        return "Yes." if "black cap" in prompt else "No"
    return "8"


@pytest.fixture
def server():
    s = FakeOpenAI(verdict)
    yield s
    s.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    return SECRET


def _api(url: str, **kw) -> OpenAIConfig:
    o = {"base_url": url, "model": "judge-model", "api_key_env": "JUDGE_KEY", "timeout_s": 2.0}
    return OpenAIConfig(**{**o, "max_retries": 2, "backoff_s": 0.01, **kw})


ROWS = [
    {"answer": "A Tern with a black cap.", "label": "Tern", "question": "What bird?"},
    {"answer": "A Tern.", "label": "Tern", "question": "What bird?"},
]
BANK = {"Tern": ["black cap", "orange beak"]}


def test_parsers():
    assert parse_yes_no("Yes, it does.") == 1 and parse_yes_no("no") == 0 and parse_yes_no("maybe") is None
    assert parse_score("8") == 0.8 and parse_score("Score: 10") == 1.0 and parse_score("none") is None


def test_judge_scores_caches_and_never_stores_the_key(server, key, tmp_path, caplog):
    cache = tmp_path / "judge.sqlite"
    caplog.set_level(logging.DEBUG)
    judge = Judge(_api(server.url), cache)
    assert isinstance(judge.client, OpenAIClient)
    rows = [dict(r) for r in ROWS]
    m = answer_metrics(rows, labels=["Tern"], bank=BANK, grounding=False, judge=judge)
    assert m["ee_judge"] == 0.5 and m["cs_judge"] == pytest.approx(0.8)
    assert [r["ee_judge"] for r in rows] == [1, 0]
    assert len(server.requests) == 4 and all(s["auth"] == f"Bearer {key}" for s in server.requests)
    assert server.requests[0]["body"]["model"] == "judge-model"
    judge.close()

    again = Judge(_api(server.url), cache)
    assert again.score(ROWS, BANK) == [{"ee": 1, "cs": 0.8}, {"ee": 0, "cs": 0.8}]
    assert again.requests_made == 0 and len(server.requests) == 4  # all from the cache
    again.close()
    assert key.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("judge.sqlite*"))
    assert key not in caplog.text


def test_429_with_retry_after_then_a_good_answer(server, key):
    server.script = [("status", 429, b'{"error": "slow down"}', {"Retry-After": "0.3"})]
    judge = Judge(_api(server.url))
    t0 = time.perf_counter()
    assert parse_yes_no(judge.ask("Reply with only yes or no: black cap?")) == 1
    assert time.perf_counter() - t0 >= 0.3  # the server's Retry-After, not the 0.01 s backoff
    assert len(server.requests) == 2 and judge.client.http_requests == 2


def test_malformed_body_is_retried_then_a_clear_error(server, key, caplog):
    server.script = [("raw", b"<html>upstream hiccup</html>")]
    judge = Judge(_api(server.url))
    assert judge.ask("Reply with only the number.") == "8"  # one bad body, then a good one
    assert len(server.requests) == 2

    server.script = [("raw", b'{"choices": [')] * 3 + [("raw", b'{"object": "chat.completion"}')]
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError) as err:
        Judge(_api(server.url, max_retries=1)).ask("Reply with only the number.")
    msg = str(err.value)
    assert len(server.requests) == 4  # two attempts: max_retries=1
    assert server.url + "/chat/completions" in msg and "a body that is not JSON" in msg
    assert "evaluate.judge_api.max_retries" in msg and "evaluate.judge=false" in msg
    assert key not in msg and key not in caplog.text


def test_a_refused_request_is_not_retried_and_the_key_is_redacted(server, key, caplog):
    server.script = [("status", 401, json.dumps({"error": f"Incorrect API key provided: {key}"}).encode())]
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError) as err:
        Judge(_api(server.url)).ask("Reply with only yes or no.")
    msg = str(err.value)
    assert len(server.requests) == 1
    assert "HTTP 401" in msg and "$JUDGE_KEY" in msg and "[redacted]" in msg
    assert key not in msg and key not in caplog.text
    with pytest.raises(JudgeError, match=r"HTTP 404 .*evaluate.judge_api.base_url"):
        Judge(_api(server.url.removesuffix("/v1"))).ask("hello")


def test_missing_key_stops_before_any_request(server, monkeypatch):
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    with pytest.raises(JudgeError, match=r"JUDGE_KEY is empty.*evaluate.judge_api.api_key_env="):
        Judge(_api(server.url))
    assert server.requests == []
    judge = Judge(_api(server.url, api_key_env=""))  # an endpoint without keys
    assert judge.ask("Reply with only the number.") == "8" and server.requests[0]["auth"] is None


def test_a_redirect_is_refused_before_the_key_reaches_another_host(server, key):
    other = FakeOpenAI(verdict)
    try:
        server.script = [("status", 302, b"", {"Location": other.url + "/chat/completions"})]
        with pytest.raises(JudgeError, match=r"HTTP 302 to http://127\.0\.0\.1:\d+/v1.*judge_api\.base_url"):
            Judge(_api(server.url)).ask("Reply with only the number.")
        assert len(server.requests) == 1 and other.requests == []
    finally:
        other.close()


def test_an_unparseable_verdict_is_left_out_of_the_mean(server, key):
    server.reply = lambda prompt: "I would rather not say."
    rows = [dict(r) for r in ROWS]
    m = answer_metrics(rows, labels=["Tern"], bank=BANK, grounding=False, judge=Judge(_api(server.url)))
    assert m["ee_judge"] is None and m["cs_judge"] is None
    assert rows[0]["ee_judge"] is None and len(server.requests) == 4  # answered, so not retried


# ---------------------------------------------------------------- settings and the evaluate stage


def test_settings_and_make_judge(server, key, tmp_path):
    cfg = load_config(
        None,
        [
            "data.root=a",
            "model.path=b",
            "evaluate.judge=true",
            f"evaluate.judge_api.base_url={server.url}",
            "evaluate.judge_api.model=judge-2",
            "evaluate.judge_api.api_key_env=JUDGE_KEY",
        ],
    )
    assert cfg.evaluate.judge and cfg.evaluate.judge_api.model == "judge-2"
    assert cfg.evaluate.judge_api.max_retries == OpenAIConfig().max_retries
    judge = make_judge(cfg.evaluate, tmp_path)
    assert judge is not None and judge.endpoint == server.url + "/chat/completions"
    judge.close()
    assert (tmp_path / "judge.sqlite").is_file()
    assert make_judge(EvaluateConfig(), tmp_path / "off") is None and not (tmp_path / "off").exists()


class _Backend:
    def generate(self, images, prompts, **kw):
        return [["A Tern with a black cap." if "a" in Path(i).stem else "A Tern."] for i in images]


class _Encoder:
    def encode(self, texts):
        import numpy as np

        return np.ones((len(texts), 4), dtype=np.float32) / 2.0


class _Ctx:
    """What ``run_evaluate`` reads of a Context, with a scripted model and encoder."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        from selfsynth.prompts import pools_for
        from selfsynth.records import Example

        self.cfg, self.run_dir, self.progress = cfg, run_dir, False
        self.cache_dir = run_dir / "cache"
        self.labels = ["Tern"]
        self.pools = pools_for("birds")
        self.test = [Example(i, f"/img/{i}.png", "Tern", "test") for i in ("a1", "b2")]

    def vlm(self, path):
        return _Backend()

    def encoder(self):
        return _Encoder()


def test_evaluate_stage_off_keeps_its_fingerprint_and_on_adds_the_verdicts(server, key, tmp_path):
    from selfsynth.io import iter_jsonl, read_json
    from selfsynth.runs import stage_fp
    from selfsynth.stages.evaluate import run_evaluate

    cfg = RunConfig()
    cfg.data.format = "jsonl"
    cfg.evaluate.general = False
    cfg.evaluate.judge_api = _api(server.url)
    ctx = _Ctx(cfg, tmp_path / "off")
    m = run_evaluate(ctx, "base", "model-dir", BANK, "in-fp")  # type: ignore[arg-type]
    assert "ee_judge" not in m and server.requests == []
    old = {k: v for k, v in asdict(cfg.evaluate).items() if k not in ("judge", "judge_api", "split")}
    want = stage_fp({**old, "question": ctx.pools.eval_question}, "model-dir", "in-fp", "a1", "b2")
    fp_off = read_json(tmp_path / "off/base/evaluate/_manifest.json")["fingerprint"]
    assert fp_off == want  # the fingerprint runs had before the judge and evaluate.split existed

    cfg.evaluate.judge = True
    ctx = _Ctx(cfg, tmp_path / "on")
    m = run_evaluate(ctx, "base", "model-dir", BANK, "in-fp")  # type: ignore[arg-type]
    assert m["ee_judge"] == 0.5 and m["cs_judge"] == pytest.approx(0.8) and len(server.requests) == 4
    rows = [r for _, r in iter_jsonl(tmp_path / "on/base/evaluate/samples.jsonl")]
    assert [r["ee_judge"] for r in rows] == [1, 0]
    assert read_json(tmp_path / "on/base/evaluate/_manifest.json")["fingerprint"] != fp_off
    assert (tmp_path / "on/cache/judge.sqlite").is_file()
