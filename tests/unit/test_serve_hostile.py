"""Hostile requests against the real server on loopback: each is refused on its own, the rest still work."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from test_serve_api import QUESTION, ask, data_url
from tiny_models import build_llava, make_images

from selfsynth.models.vlm import VLM
from selfsynth.serve import server as server_mod
from selfsynth.serve.guard import allowed_hosts
from selfsynth.serve.protocol import Limits
from selfsynth.serve.server import ServerThread, create_app

KEY = "sk-hostile-7f3a9c"
LIMITS = Limits(max_body_bytes=1 << 20, max_image_px=256, max_new_tokens=8, max_prompt_tokens=256)
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hostile")
    vlm = VLM.load(build_llava(root / "model"))
    url = data_url(str(make_images(root / "images", 1)[0]))
    yield vlm, url
    torch.set_num_threads(threads)


def _serve(vlm, **kw):
    kw = {"limits": LIMITS, "max_batch": 4, "wait_ms": 200, "allowed_hosts": allowed_hosts("127.0.0.1"), **kw}
    return ServerThread(create_app(vlm, model_id="tiny-llava", **kw))


@pytest.fixture(scope="module")
def server(tiny):
    with _serve(tiny[0], max_queue=4) as s:
        yield s


def _post(base: str, body, **kw) -> httpx.Response:
    return httpx.post(base + CHAT, json=body, timeout=kw.pop("timeout", 30), **kw)


def _body(url: str, text: str = QUESTION) -> dict:
    return {"model": "tiny-llava", "messages": ask(url, text), "max_tokens": 4}


def _together(calls):
    """Run the zero-argument callables on threads at once; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda f: f(), calls))


def test_the_image_token_fails_only_its_own_request(server, tiny):
    texts = [QUESTION, f"what is {'<image>'} here?", "Describe it.", "Why?"]
    codes = [
        r.status_code for r in _together([lambda t=t: _post(server.url, _body(tiny[1], t)) for t in texts])
    ]
    assert codes == [200, 400, 200, 200]
    err = _post(server.url, _body(tiny[1], "hi </s> there")).json()["error"]
    assert err["code"] == "reserved_token" and "'</s>'" in err["message"]


def test_a_batch_that_still_fails_is_retried_row_by_row(tiny, monkeypatch):
    monkeypatch.setattr(server_mod, "reserved_tokens", lambda backend: ())  # let the token reach the model
    with _serve(tiny[0]) as s:
        texts = [QUESTION, "what is <image> here?", "Describe it.", "Why?"]
        replies = _together([lambda t=t: _post(s.url, _body(tiny[1], t)) for t in texts])
    assert [r.status_code for r in replies] == [200, 500, 200, 200]
    err = replies[1].json()["error"]
    assert err["message"].startswith("generation failed (request id req-") and "Error" not in err["message"]
    assert replies[1].headers["x-request-id"] in err["message"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_gets_415(server, tiny, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(server.url + CHAT, content=json.dumps(_body(tiny[1])), headers=headers, timeout=30)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_oversized_prompts_are_refused_at_once(server, tiny):
    # 20,000 words fail the character pre-check untokenized; 300 words are counted in tokens.
    for text, unit in ((" ".join(["bird"] * 20_000), "characters"), ("bird " * 300, "tokens")):
        t0 = time.perf_counter()
        r = _post(server.url, _body(tiny[1], text))
        assert time.perf_counter() - t0 < 5
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "context_length_exceeded"
        assert f"{unit} long" in err["message"] and "--max-prompt-tokens" in err["message"]


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/png;base64," + base64.b64encode(EPS).decode(), "PNG, JPEG"),
        ("data:image/png;base64," + base64.b64encode(_png_bytes()[:60]).decode(), "damaged"),
        ("data:text/plain;base64," + base64.b64encode(_png_bytes()).decode(), "image/*"),
    ],
    ids=["eps-labelled-png", "truncated-png", "text-mime"],
)
def test_unsafe_or_broken_images_are_400(server, url, words):
    r = _post(server.url, _body(url))
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"messages": [], "seed": ' + b"9" * 5000 + b"}", "number too long"),
    ],
    ids=["deep", "huge-int"],
)
def test_json_the_decoder_chokes_on_is_400(server, raw, words):
    r = httpx.post(server.url + CHAT, content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def _rss_mb() -> float:
    """This process's resident memory now (the server runs in it, on a thread)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_flood_gets_answers_or_503_with_retry_after(server, tiny):
    def flood(tag: str) -> list:
        return _together(
            [lambda i=i: _post(server.url, _body(tiny[1], f"{QUESTION} {tag}{i}")) for i in range(48)]
        )

    flood("warm-up ")  # the first flood allocates the batcher's and the model's working memory
    before = _rss_mb()
    for round_ in range(2):
        replies = flood(f"r{round_} ")
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        assert all(int(r.headers["retry-after"]) >= 1 for r in replies if r.status_code == 503)
    assert _rss_mb() - before < 100, "memory kept growing under repeated floods"
    assert httpx.get(server.url + "/health", timeout=5).json()["status"] == "ok"


def test_a_foreign_host_header_is_refused(server):
    assert (
        httpx.get(server.url + "/v1/models", headers={"host": "attacker.example"}, timeout=5).status_code
        == 421
    )
    assert (
        httpx.get(server.url + "/v1/models", headers={"host": "attacker.example:80"}, timeout=5).status_code
        == 421
    )
    assert httpx.get(
        server.url + "/v1/models", headers={"host": f"localhost:{server.port}"}, timeout=5
    ).is_success


def test_api_key_off_and_on_and_never_logged(server, tiny, caplog, capfd):
    assert httpx.get(server.url + "/v1/models", timeout=5).status_code == 200  # off: no key needed
    caplog.set_level(logging.DEBUG)
    with _serve(tiny[0], api_key=KEY) as s:
        missing = _post(s.url, _body(tiny[1]))
        wrong = _post(s.url, _body(tiny[1]), headers={"authorization": "Bearer " + KEY[:-1]})
        right = _post(s.url, _body(tiny[1]), headers={"authorization": "Bearer " + KEY})
        page = httpx.get(s.url + "/", timeout=5)
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key" and KEY not in wrong.text
    assert right.status_code == 200 and page.status_code == 200 and "Authorization" in page.text
    out, err = capfd.readouterr()
    assert KEY not in caplog.text and KEY not in out and KEY not in err


class Slow:
    """A backend double whose every call takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay, self.seen = delay, []
        self.lock = threading.Lock()

    def generate(self, images, prompts, **kw):
        with self.lock:
            self.seen.extend(prompts)
        time.sleep(self.delay)
        return [["ok"] for _ in prompts]

    def chat(self, image, messages, **kw):
        return "ok"


def test_timeouts_are_504_and_departed_clients_are_dropped(tiny):
    slow = Slow(0.8)
    with ServerThread(
        create_app(slow, model_id="tiny-llava", max_batch=1, wait_ms=0, request_timeout=0.4)
    ) as s:
        t0 = time.perf_counter()
        r = _post(s.url, _body(tiny[1], "late"))
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert time.perf_counter() - t0 < 0.8
    slow = Slow(1.5)
    with ServerThread(
        create_app(slow, model_id="tiny-llava", max_batch=1, wait_ms=0, request_timeout=5)
    ) as s:
        first = threading.Thread(target=_post, args=(s.url, _body(tiny[1], "first")))
        first.start()
        time.sleep(0.2)  # "first" holds the model
        with pytest.raises(httpx.TimeoutException):
            _post(s.url, _body(tiny[1], "gone"), timeout=0.2)
        first.join()
        time.sleep(0.3)
    assert slow.seen == ["first"]  # the departed client's job never ran


def test_an_unexpected_crash_is_a_generic_500_with_a_request_id(tiny, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise KeyError("secret internal detail")

    monkeypatch.setattr(server_mod, "completion", broken)
    with ServerThread(create_app(Slow(0), model_id="tiny-llava")) as s:
        r = _post(s.url, _body(tiny[1]))
    err = r.json()["error"]
    assert r.status_code == 500 and err["code"] == "internal_error" and "secret" not in r.text
    assert r.headers["x-request-id"] in err["message"]
    assert "secret internal detail" in caplog.text and r.headers["x-request-id"] in caplog.text
