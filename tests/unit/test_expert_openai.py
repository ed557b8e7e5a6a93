"""The OpenAI-compatible expert client against a local HTTP server that misbehaves on purpose:
retries, Retry-After, timeouts, malformed bodies, the cache, clear errors and a secret API key."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fake_openai import FakeOpenAI

from selfsynth.config import ConceptsConfig, OpenAIConfig
from selfsynth.errors import ExpertError
from selfsynth.experts import make_source
from selfsynth.experts.openai_client import OpenAIClient

KEY = "sk-test-9f8e7d6c5b4a-UNIQUE-SECRET"
GOOD = "Here are the features:\n- **Red** crown.\n- forked tail\n- white wing bars\n\nHope this helps!"


@pytest.fixture
def endpoint():
    ep = FakeOpenAI(lambda prompt: GOOD)
    yield ep
    ep.close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("SELFSYNTH_TEST_KEY", KEY)
    return KEY


def _cfg(url: str, **openai) -> ConceptsConfig:
    o = {
        "base_url": url,
        "model": "expert-1",
        "api_key_env": "SELFSYNTH_TEST_KEY",
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_s": 0.01,
        **openai,
    }
    return ConceptsConfig(source="openai", openai=OpenAIConfig(**o))


def _cache_bytes(path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_good_answer_then_cache_hits_make_no_requests(endpoint, api_key, tmp_path):
    cache = tmp_path / "expert.sqlite"
    src = make_source(_cfg(endpoint.url), cache)
    bank = src.concepts(["Scarlet Tanager", "Cardinal"])
    assert bank["Scarlet Tanager"] == ["Red crown", "forked tail", "white wing bars"]
    assert len(endpoint.requests) == 2
    assert isinstance(src.client, OpenAIClient)  # the client the judge uses too
    req = endpoint.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert req["body"]["model"] == "expert-1" and req["body"]["temperature"] == 0.0
    assert "Scarlet Tanager" in req["body"]["messages"][0]["content"]
    src.close()
    again = make_source(_cfg(endpoint.url), cache)  # a new process would do the same
    assert again.concepts(["Cardinal", "Scarlet Tanager"]) == {
        k: bank[k] for k in ("Cardinal", "Scarlet Tanager")
    }
    assert len(endpoint.requests) == 2 and again.requests_made == 0
    # a different model is a different request: it is paid for
    make_source(_cfg(endpoint.url, model="expert-2"), cache).concepts(["Cardinal"])
    assert len(endpoint.requests) == 3


def test_429_with_retry_after_then_success(endpoint, api_key):
    endpoint.script = [("status", 429, b'{"error": "slow down"}', {"Retry-After": "0.3"})]
    src = make_source(_cfg(endpoint.url), None)
    t0 = time.perf_counter()
    assert src.concepts(["gull"])["gull"][0] == "Red crown"
    assert time.perf_counter() - t0 >= 0.3  # the server's Retry-After, not the 0.01 s backoff
    assert len(endpoint.requests) == 2


def test_retry_after_forms_and_the_wait_cap(endpoint, api_key, monkeypatch):
    import email.utils

    from selfsynth.experts import openai_client

    assert openai_client.retry_after_s("2") == 2.0 and openai_client.retry_after_s("-1") == 0.0
    assert openai_client.retry_after_s("") is None and openai_client.retry_after_s("soon") is None
    date = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < openai_client.retry_after_s(date) <= 60
    waits: list[float] = []
    monkeypatch.setattr(openai_client.time, "sleep", waits.append)
    endpoint.script = [("status", 503, b"", {"Retry-After": "86400"})]
    assert make_source(_cfg(endpoint.url), None).concepts(["gull"])["gull"]
    assert waits == [openai_client.MAX_WAIT_S]  # the jitter never pushes a wait past the cap


def test_backoff_doubles_and_each_wait_is_capped(endpoint, api_key, monkeypatch):
    from selfsynth.experts import openai_client

    waits: list[float] = []
    monkeypatch.setattr(openai_client.time, "sleep", waits.append)
    endpoint.script = [("status", 503, b"")] * 5
    src = make_source(_cfg(endpoint.url, backoff_s=60.0, max_retries=5), None)
    assert src.concepts(["gull"])["gull"]
    cap = openai_client.MAX_WAIT_S
    assert [60.0 <= waits[0] < 66.0, 120.0 <= waits[1] < 126.0, 240.0 <= waits[2] < 246.0] == [True] * 3
    assert waits[3:] == [cap, cap]


def test_500_then_success_and_stall_then_success(endpoint, api_key, caplog):
    endpoint.script = [("status", 500, b"oops"), ("stall", 1.0)]
    src = make_source(_cfg(endpoint.url, timeout_s=0.3), None)
    with caplog.at_level(logging.WARNING):
        assert src.concepts(["gull"])["gull"]
    assert len(endpoint.requests) == 3
    assert "HTTP 500" in caplog.text and "timeout_s=0.3" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        ("raw", b"<html>not json</html>"),
        ("raw", b'{"object": "chat.completion"}'),
        ("ok", ""),
        ("ok", "I cannot help with birds."),
    ],
)
def test_malformed_bodies_are_retried(endpoint, api_key, bad):
    endpoint.script = [bad]
    src = make_source(_cfg(endpoint.url), None)
    assert src.concepts(["gull"])["gull"] == ["Red crown", "forked tail", "white wing bars"]
    assert len(endpoint.requests) == 2


def test_too_few_bullets_is_retried_then_a_clear_error(endpoint, api_key):
    endpoint.script = [("ok", "- red crown\n- black tail")] * 4
    src = make_source(_cfg(endpoint.url), None)
    with pytest.raises(ExpertError, match="only 2 bullet points"):
        src.concepts(["gull"])
    assert len(endpoint.requests) == 4


def test_clear_error_after_last_retry(endpoint, api_key, caplog, tmp_path):
    endpoint.script = [("status", 503, f"upstream rejected key {KEY}".encode())] * 10
    src = make_source(_cfg(endpoint.url, max_retries=2), tmp_path / "c.sqlite")
    with caplog.at_level(logging.DEBUG), pytest.raises(ExpertError) as err:
        src.concepts(["Herring Gull"])
    msg = str(err.value)
    assert len(endpoint.requests) == 3
    assert "'Herring Gull'" in msg and endpoint.url + "/chat/completions" in msg and "HTTP 503" in msg
    assert "max_retries" in msg
    assert KEY not in msg and KEY not in caplog.text


def test_timeouts_exhausted(endpoint, api_key):
    endpoint.script = [("stall", 0.6)] * 2
    src = make_source(_cfg(endpoint.url, timeout_s=0.2, max_retries=1), None)
    with pytest.raises(ExpertError, match="no answer within timeout_s=0.2"):
        src.concepts(["gull"])
    assert len(endpoint.requests) == 2


def test_auth_error_is_not_retried_and_the_key_is_redacted(endpoint, api_key, caplog, tmp_path):
    endpoint.script = [("status", 401, json.dumps({"error": f"Incorrect API key provided: {KEY}"}).encode())]
    cache = tmp_path / "expert.sqlite"
    src = make_source(_cfg(endpoint.url), cache)
    with caplog.at_level(logging.DEBUG), pytest.raises(ExpertError) as err:
        src.concepts(["gull"])
    assert len(endpoint.requests) == 1
    assert "HTTP 401" in str(err.value) and "SELFSYNTH_TEST_KEY" in str(err.value)
    assert "[redacted]" in str(err.value) and KEY not in str(err.value) and KEY not in caplog.text


def test_key_never_reaches_the_cache_file_or_logs(endpoint, api_key, caplog, tmp_path):
    cache = tmp_path / "expert.sqlite"
    endpoint.script = [("status", 500, KEY.encode())]
    with caplog.at_level(logging.DEBUG):
        src = make_source(_cfg(endpoint.url), cache)
        src.concepts(["gull", "tern"])
    data = _cache_bytes(cache)
    assert b"white wing bars" in data  # the answers are there ...
    assert KEY.encode() not in data  # ... the key is not
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_missing_key_variable_is_a_clear_error(endpoint, monkeypatch):
    monkeypatch.delenv("SELFSYNTH_TEST_KEY", raising=False)
    with pytest.raises(ExpertError, match="SELFSYNTH_TEST_KEY"):
        make_source(_cfg(endpoint.url), None).concepts(["gull"])
    assert endpoint.requests == []
    # an endpoint without keys: api_key_env="" sends no Authorization header
    make_source(_cfg(endpoint.url, api_key_env=""), None).concepts(["gull"])
    assert "Authorization" not in endpoint.requests[0]["headers"]


def test_finished_labels_survive_a_failure(endpoint, api_key, tmp_path):
    cache = tmp_path / "expert.sqlite"
    endpoint.script = [("ok", GOOD), ("status", 500, b"down"), ("status", 500, b"down")]
    with pytest.raises(ExpertError, match="'tern'"):
        make_source(_cfg(endpoint.url, max_retries=1), cache).concepts(["gull", "tern", "crow"])
    assert len(endpoint.requests) == 3
    rerun = make_source(_cfg(endpoint.url), cache)
    assert set(rerun.concepts(["gull", "tern", "crow"])) == {"gull", "tern", "crow"}
    assert rerun.requests_made == 2  # gull came from the cache
    asked = [r["body"]["messages"][0]["content"] for r in endpoint.requests[3:]]
    assert ["tern" in a for a in asked] == [True, False] and "crow" in asked[1]


def test_connection_refused_is_retried_then_reported(api_key):
    ep = FakeOpenAI(lambda prompt: GOOD)
    url = ep.url
    ep.close()  # nothing listens there any more
    src = make_source(_cfg(url, max_retries=1), None)
    with pytest.raises(ExpertError, match="connection error"):
        src.concepts(["gull"])
    assert src.http_requests == 2


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_key_never_leaves(endpoint, api_key, code):
    elsewhere = FakeOpenAI(lambda prompt: GOOD)  # another port: where a hostile redirect points
    try:
        target = elsewhere.url + "/chat/completions"
        endpoint.script = [("status", code, b"", {"Location": target})]
        src = make_source(_cfg(endpoint.url), None)
        with pytest.raises(ExpertError) as err:
            src.concepts(["gull"])
        msg = str(err.value)
        assert f"HTTP {code}" in msg and target in msg and "concepts.openai.base_url" in msg
        assert len(endpoint.requests) == 1  # not retried either
        assert elsewhere.requests == []  # so the Authorization header never reached it
    finally:
        elsewhere.close()


def test_an_oversized_body_is_refused(endpoint, api_key, monkeypatch):
    from selfsynth.experts import openai_client

    assert openai_client.MAX_BODY_BYTES == 8 * 1024 * 1024
    monkeypatch.setattr(openai_client, "MAX_BODY_BYTES", 4096)
    padded = GOOD + " " * 5000  # a well-formed answer: only its size is wrong
    endpoint.script = [("ok", padded)]
    src = make_source(_cfg(endpoint.url), None)
    with pytest.raises(ExpertError, match=r"more than 4096 bytes.*concepts.openai.base_url"):
        src.concepts(["gull"])
    assert len(endpoint.requests) == 1
    endpoint.script = [("ok", GOOD + " " * 3000)]  # under the cap it is an ordinary answer
    assert src.concepts(["gull"])["gull"] == ["Red crown", "forked tail", "white wing bars"]


def test_an_oversized_body_at_the_real_cap_is_refused(endpoint, api_key):
    from selfsynth.experts import openai_client

    endpoint.script = [("raw", b"x" * (openai_client.MAX_BODY_BYTES + 100))]
    with pytest.raises(ExpertError, match="more than 8388608 bytes"):
        make_source(_cfg(endpoint.url), None).concepts(["gull"])


# ---------------------------------------------------------------- CLI


def test_cli_fetch_writes_a_bank_and_reuses_the_cache(endpoint, api_key, tmp_path, capsys):
    from selfsynth.cli import main

    labels = tmp_path / "labels.txt"
    labels.write_text("# birds\nScarlet Tanager\n\nCardinal\nCardinal\n")
    out = tmp_path / "bank.json"
    argv = [
        "concepts",
        "fetch",
        "--source",
        "openai",
        "--labels-file",
        str(labels),
        "--out",
        str(out),
        f"openai.base_url={endpoint.url}",
        "concepts.openai.api_key_env=SELFSYNTH_TEST_KEY",
        "openai.backoff_s=0.01",
    ]
    assert main(argv) == 0
    bank = json.loads(out.read_text())
    assert list(bank) == ["Scarlet Tanager", "Cardinal"] and bank["Cardinal"][1] == "forked tail"
    assert "2 new expert calls" in capsys.readouterr().out
    assert (tmp_path / "expert.sqlite").is_file() and KEY.encode() not in _cache_bytes(
        tmp_path / "expert.sqlite"
    )
    assert main(argv) == 0
    assert "0 new expert calls" in capsys.readouterr().out
    assert len(endpoint.requests) == 2


def test_cli_fetch_errors_are_one_line(tmp_path, capsys):
    from selfsynth.cli import main

    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert main(["concepts", "fetch", "--labels-file", str(tmp_path / "empty.txt"), "--out", "x.json"]) == 2
    assert "no labels" in capsys.readouterr().err
    assert main(["concepts", "fetch", "--out", "x.json"]) == 2
    assert "--labels-file" in capsys.readouterr().err
    assert main(["concepts", "fetch", "--labels-file", "l.txt", "--out", "x.json", "openai.modle=x"]) == 2
    assert "did you mean" in capsys.readouterr().err
