"""The optional LLM judge against a local OpenAI-compatible server: answers, caching, the key kept out."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from selfsynth.config import OpenAIConfig
from selfsynth.metrics.answers import answer_metrics
from selfsynth.metrics.judge import Judge, JudgeError, parse_score, parse_yes_no

SECRET = "sk-test-not-a-real-key-123"


@pytest.fixture
def server():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"auth": self.headers.get("Authorization"), "body": body})
            prompt = body["messages"][0]["content"]
            if "fail" in prompt:
                self.send_response(400)
                self.end_headers()
                return
            text = ("Yes." if "black cap" in prompt else "No") if "Reply with only yes" in prompt else "8"
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", seen
    httpd.shutdown()
    httpd.server_close()


def test_parsers():
    assert parse_yes_no("Yes, it does.") == 1 and parse_yes_no("no") == 0 and parse_yes_no("maybe") is None
    assert parse_score("8") == 0.8 and parse_score("Score: 10") == 1.0 and parse_score("none") is None


def test_judge_scores_caches_and_never_stores_the_key(server, tmp_path, monkeypatch, caplog):
    url, seen = server
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    cfg = OpenAIConfig(base_url=url, model="judge-model", api_key_env="JUDGE_KEY", max_retries=0)
    cache = tmp_path / "judge.sqlite"
    rows = [
        {"answer": "A Tern with a black cap.", "label": "Tern", "question": "What bird?"},
        {"answer": "A Tern.", "label": "Tern", "question": "What bird?"},
    ]
    bank = {"Tern": ["black cap", "orange beak"]}
    caplog.set_level(logging.DEBUG)
    judge = Judge(cfg, cache)
    m = answer_metrics(rows, labels=["Tern"], bank=bank, grounding=False, judge=judge)
    assert m["ee_judge"] == 0.5 and m["cs_judge"] == pytest.approx(0.8)
    assert len(seen) == 4 and all(s["auth"] == f"Bearer {SECRET}" for s in seen)
    judge.close()

    again = Judge(cfg, cache)
    assert again.score(rows, bank) == [{"ee": 1, "cs": 0.8}, {"ee": 0, "cs": 0.8}]
    assert again.requests_made == 0 and len(seen) == 4  # all from the cache
    again.close()
    assert SECRET.encode() not in cache.read_bytes()
    assert SECRET not in caplog.text


def test_judge_errors_are_clear(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    cfg = OpenAIConfig(base_url=url, model="m", api_key_env="JUDGE_KEY", max_retries=0)
    from selfsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="JUDGE_KEY"):
        Judge(cfg).ask("hello")
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    with pytest.raises(JudgeError, match="HTTP 400") as e:
        Judge(cfg).ask("please fail")
    assert SECRET not in str(e.value)
