"""The real server (uvicorn on a free port) with a tiny random LLaVA, driven by the official openai client."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import pytest
import torch
from PIL import Image
from tiny_models import build_llava, make_images

from selfsynth.metrics.words import content_words
from selfsynth.models.vlm import VLM
from selfsynth.serve.protocol import Limits
from selfsynth.serve.server import ServerThread, create_app

openai = pytest.importorskip("openai")

QUESTION = "What is this? Explain why."
MAX_TOKENS = 24


def data_url(image: Image.Image | str, fmt: str = "PNG") -> str:
    if isinstance(image, str):
        image = Image.open(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def ask(url: str, text: str = QUESTION) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Tiny model + a concept bank built from a word the model really says about the first image."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve")
    vlm = VLM.load(build_llava(root / "model"))
    images = [str(p) for p in make_images(root / "images", 3)]
    answer = vlm.generate([Image.open(images[0]).convert("RGB")], [QUESTION], max_new_tokens=MAX_TOKENS)[0][0]
    words = [w for w in content_words(answer) if w.isalpha() and len(w) >= 3]
    assert words, f"the tiny model said no usable word ({answer!r}); pick another seed or image"
    concepts = {"Tiny Finch": [words[0]], "Other Bird": ["zebra striped wing"]}
    limits = Limits(max_body_bytes=1 << 20, max_image_px=256, max_new_tokens=MAX_TOKENS)
    app = create_app(vlm, model_id="tiny-llava", concepts=concepts, limits=limits, max_batch=8, wait_ms=20)
    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        yield {
            "url": server.url,
            "client": client,
            "images": images,
            "answer": answer,
            "word": words[0],
            "vlm": vlm,
        }
    torch.set_num_threads(threads)


def test_models_and_health(served):
    assert [m.id for m in served["client"].models.list()] == ["tiny-llava"]
    health = httpx.get(served["url"] + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-llava" and health["concepts"] == 2


def test_text_and_image_with_the_openai_client(served):
    r = served["client"].chat.completions.create(
        model="tiny-llava", messages=ask(data_url(served["images"][0])), max_tokens=MAX_TOKENS, temperature=0
    )
    assert r.object == "chat.completion" and r.model == "tiny-llava" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    # Greedy and alone in its batch: exactly what the model says through the Python API.
    assert r.choices[0].message.content == served["answer"]
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens >= r.usage.completion_tokens
    extra = r.model_extra
    assert extra["evidence"] == [served["word"]]
    assert extra["evidence_detail"] == [
        {"concept": served["word"], "kind": "concept", "labels": ["Tiny Finch"]}
    ]
    assert "".join(s["text"] for s in extra["evidence_segments"]) == served["answer"]
    assert any(s["concept"] == served["word"] for s in extra["evidence_segments"])


def test_image_only_uses_the_default_question_and_system_text_is_accepted(served):
    url = data_url(served["images"][1], "JPEG")
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]},
    ]
    r = served["client"].chat.completions.create(model="tiny-llava", messages=msgs, max_tokens=4)
    assert isinstance(r.choices[0].message.content, str)


def test_streaming_gives_openai_chunks(served):
    stream = served["client"].chat.completions.create(
        model="tiny-llava",
        messages=ask(data_url(served["images"][0])),
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    assert text == served["answer"]
    assert parts[0].choices[0].delta.role == "assistant"
    finals = [c for c in parts if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["evidence"] == [served["word"]]
    assert parts[-1].usage is not None and not parts[-1].choices
    raw = httpx.post(
        served["url"] + "/v1/chat/completions",
        timeout=60,
        json={
            "model": "tiny-llava",
            "messages": ask(data_url(served["images"][0])),
            "stream": True,
            "max_tokens": 2,
        },
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_follow_up_keeps_the_image(served):
    url = data_url(served["images"][0])
    msgs = [*ask(url), {"role": "assistant", "content": "a small bird"}, {"role": "user", "content": "why?"}]
    r = served["client"].chat.completions.create(model="tiny-llava", messages=msgs, max_tokens=8)
    image = Image.open(served["images"][0]).convert("RGB")
    expect = served["vlm"].chat(
        image,
        [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "a small bird"},
            {"role": "user", "content": "why?"},
        ],
        max_new_tokens=8,
    )
    assert r.choices[0].message.content == expect


def _error(served, body, status, code):
    r = httpx.post(served["url"] + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]
    return err


def test_bad_requests_get_openai_shaped_errors(served):
    url = data_url(served["images"][0])
    c = served["client"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="gpt-4o", messages=ask(url))
    with pytest.raises(openai.BadRequestError, match="base64"):
        c.chat.completions.create(model="tiny-llava", messages=ask("data:image/png;base64,%%%not-base64"))
    _error(
        served,
        {
            "model": "tiny-llava",
            "messages": ask("data:image/png;base64," + base64.b64encode(b"plain text").decode()),
        },
        400,
        "invalid_image",
    )
    _error(served, {"messages": ask("https://example.com/bird.png")}, 400, "invalid_image_url")
    _error(served, {"messages": ask(url), "max_tokens": MAX_TOKENS + 1}, 400, "max_tokens_exceeded")
    _error(served, {"messages": [{"role": "user", "content": ""}]}, 400, "empty_request")
    _error(served, {"messages": [{"role": "user", "content": "hello"}]}, 400, "image_required")
    _error(served, {"messages": ask(data_url(Image.new("RGB", (300, 10))))}, 400, "image_too_large")
    _error(served, {"messages": ask(url), "n": 2}, 400, "invalid_value")
    _error(served, {"messages": ask(url), "temperature": "hot"}, 400, "invalid_value")
    _error(served, {"messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_value")
    _error(served, {"messages": [*ask(url), *ask(data_url(served["images"][1]))]}, 400, "too_many_images")
    _error(served, {"messages": [*ask(url), {"role": "assistant", "content": "x"}]}, 400, "invalid_value")
    r = httpx.post(
        served["url"] + "/v1/chat/completions",
        content=b"{nope",
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.get(served["url"] + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(served["url"] + "/health").json()["status"] == "ok"  # still alive


def test_huge_bodies_are_refused_with_413(served):
    big = {"model": "tiny-llava", "messages": ask("data:image/png;base64," + "A" * (2 << 20))}
    with pytest.raises(openai.APIStatusError) as info:
        served["client"].chat.completions.create(**big)
    assert info.value.status_code == 413
    chunked = httpx.post(
        served["url"] + "/v1/chat/completions",
        timeout=60,
        headers={"content-type": "application/json"},
        content=(b"x" * (1 << 16) for _ in range(40)),
    )  # no Content-Length: streamed
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"


def test_twenty_concurrent_requests_succeed_and_are_batched(served):
    url = data_url(served["images"][0])
    c = served["client"]
    before = httpx.get(served["url"] + "/health").json()

    def one(results, i):
        r = c.chat.completions.create(
            model="tiny-llava", messages=ask(url, f"{QUESTION} ({i})"), max_tokens=MAX_TOKENS
        )
        results[i] = r.choices[0].message.content

    t0 = time.perf_counter()
    sequential = [None] * 20
    for i in range(20):
        one(sequential, i)
    t_seq = time.perf_counter() - t0
    concurrent = [None] * 20
    threads = [threading.Thread(target=one, args=(concurrent, i)) for i in range(20)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_conc = time.perf_counter() - t0
    assert all(isinstance(a, str) for a in concurrent)
    after = httpx.get(served["url"] + "/health").json()
    assert after["requests"] - before["requests"] == 40
    assert after["largest_batch"] >= 2  # the concurrent ones shared model calls
    print(
        json.dumps(
            {
                "sequential_req_per_s": round(20 / t_seq, 1),
                "concurrent_req_per_s": round(20 / t_conc, 1),
                "batches_for_40": after["batches"] - before["batches"],
            }
        )
    )
