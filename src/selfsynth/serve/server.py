"""The FastAPI app: OpenAI chat completions (plain and streamed), model list, health, the web page.

``create_app(backend, model_id=...)`` wraps any object with ``generate`` and ``chat`` (the VLM, or
a test double), so the HTTP layer is tested without a model and the model without HTTP.
``ServerThread`` runs the app under uvicorn on a background thread (tests, benchmarks).
Every error leaves as OpenAI's JSON error shape so existing clients raise their usual exceptions.
``guard.Guard`` checks Host, API key and content type first; here each request's text is checked
for the tokenizer's special tokens and its length, and its wait for the model is bounded in time
and dropped when the client goes away.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from selfsynth.serve.batcher import Backend, Batcher, QueueFull
from selfsynth.serve.evidence import EvidenceFinder
from selfsynth.serve.guard import Guard, reserved_tokens
from selfsynth.serve.page import PAGE
from selfsynth.serve.protocol import (
    ApiError,
    ChatRequest,
    Limits,
    chunks,
    completion,
    completion_id,
    error_body,
    parse_request,
)

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 16  # text longer than this many characters per allowed token is refused untokenized
_POLL_S = 0.25  # how often a waiting request checks whether its client is still there


def _error(
    status: int, message: str, *, code: str | None, type: str = "invalid_request_error"
) -> JSONResponse:  # noqa: A002
    return JSONResponse(error_body(message, type=type, code=code), status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    too_big = ApiError(
        413,
        f"request body is larger than {limit // (1 << 20)} MB (set by --max-body-mb); send a smaller image",
        code="body_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise too_big
    return bytes(data)


class _Counter:
    """Token counts for ``usage``: the tokenizer's when the backend has one, whitespace words otherwise.

    The prompt count covers the text of the conversation, not the image tokens. It uses a private
    copy of the tokenizer: the model thread changes the shared one's padding settings mid-call, and
    a Rust tokenizer used from two threads at once fails ("Already borrowed"), hence the lock too.
    """

    def __init__(self, backend: Any) -> None:
        processor = getattr(backend, "processor", None)
        tokenizer = getattr(processor, "tokenizer", None)
        try:
            self.tokenizer = copy.deepcopy(tokenizer)
        except Exception:  # an uncopyable tokenizer: fall back to word counts rather than risk a race
            log.warning("cannot copy the tokenizer; usage counts whitespace-separated words")
            self.tokenizer = None
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _text_check(count: _Counter, reserved: Sequence[str], cap: int):
    """The check ``parse_request`` runs on the text turns: no special tokens, at most ``cap`` tokens."""

    def check(turns: list[dict[str, str]]) -> None:
        texts = [t["content"] for t in turns]
        chars = sum(len(t) for t in texts)
        n = None if chars > cap * CHARS_PER_TOKEN else sum(count(t) for t in texts)
        if n is None or n > cap:
            size = f"{n} tokens" if n is not None else f"{chars} characters"
            raise ApiError(
                400,
                f"the conversation's text is {size} long; at most {cap} prompt tokens are allowed "
                "(set by --max-prompt-tokens)",
                code="context_length_exceeded",
                param="messages",
            )
        for token in reserved:
            if any(token in t for t in texts):
                raise ApiError(
                    400,
                    f"the text contains {token!r}, a special token of the model; the server inserts "
                    "the image and the chat markup itself, so remove it from the message",
                    code="reserved_token",
                    param="messages",
                )

    return check


def create_app(
    backend: Backend,
    *,
    model_id: str,
    concepts: Mapping[str, Sequence[str]] | None = None,
    limits: Limits | None = None,
    max_batch: int = 8,
    wait_ms: float = 5.0,
    no_repeat_ngram: int = 0,
    api_key: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    request_timeout: float = 120.0,
    max_queue: int | None = 64,
) -> FastAPI:
    """The server around ``backend``; ``concepts`` ({label: [phrases]}) enables the evidence fields.

    ``no_repeat_ngram`` > 1 applies the repeat guard to every answer (the bank's class names may
    repeat), as the world's recipe does in its own decoding. ``api_key``: required as a bearer
    token on /v1/ paths; ``allowed_hosts``: Host names answered (None: any, see
    ``guard.allowed_hosts``); ``request_timeout``: seconds a request may wait for its answer (504
    after); ``max_queue``: most requests waiting for the model (503 beyond).
    """
    limits = limits or Limits()
    guard = (
        {"no_repeat_ngram": no_repeat_ngram, "allow_repeats": list(concepts or {})}
        if no_repeat_ngram > 1
        else {}
    )
    batcher = Batcher(backend, max_batch=max_batch, wait_ms=wait_ms, extra=guard, max_queue=max_queue)
    finder = EvidenceFinder(concepts)
    count = _Counter(backend)
    check = _text_check(count, reserved_tokens(backend), limits.max_prompt_tokens)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="selfsynth", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.finder, app.state.limits = batcher, finder, limits
    app.add_middleware(Guard, api_key=api_key, hosts=allowed_hosts)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), code=str(exc.status_code))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_id,
            "concepts": len(finder.phrases),
            "max_batch": max_batch,
            "pending": batcher.pending,
            **batcher.stats.as_dict(),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(model_id)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        if name != model_id:
            raise ApiError(
                404,
                f"The model '{name}' does not exist; this server serves '{model_id}'",
                code="model_not_found",
            )
        return _model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        with batcher.arriving():
            raw = await _read_body(request, limits.max_body_bytes)
            body = _json(raw)
            # Decoding a large image takes a while: keep it off the event loop.
            req = await asyncio.to_thread(parse_request, body, limits, model_id, check)
        rid = request.state.request_id
        job = asyncio.ensure_future(_submit(req))
        try:
            answer = await _wait(request, job, request_timeout)
        except ApiError:
            raise
        except Exception:
            log.exception("generation failed (request id %s)", rid)
            return _error(
                500, f"generation failed (request id {rid})", code="generation_failed", type="server_error"
            )
        finally:
            job.cancel()  # a job still queued is skipped by the worker; one running is discarded
        if answer is None:
            log.info("client went away; dropped its request (request id %s)", rid)
            return Response(status_code=499)
        return _respond(req, answer)

    async def _submit(req: ChatRequest) -> str:
        try:
            return await batcher.submit(req.image, req.messages, req.params)
        except QueueFull as e:
            per_batch = batcher.stats.busy_s / max(batcher.stats.batches, 1)
            wait = max(1, math.ceil(per_batch * (batcher.pending / max_batch + 1)))
            raise ApiError(
                503,
                f"the server is busy ({e}); retry in a few seconds",
                code="server_busy",
                type="server_error",
                headers={"Retry-After": str(wait)},
            ) from None

    def _respond(req: ChatRequest, answer: str):
        cid = completion_id()
        completion_tokens = count(answer)
        finish = "length" if completion_tokens >= req.params.max_new_tokens else "stop"
        prompt_tokens = sum(count(m["content"]) for m in req.messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ev = finder(answer)
        extra = {
            "evidence": ev.cited,
            "evidence_detail": ev.detail(),
            "evidence_segments": ev.segments_json(),
        }
        if not req.stream:
            return completion(cid, req.model, answer, finish, usage, extra)
        events = chunks(cid, req.model, answer, finish, usage if req.include_usage else None, extra)

        async def sse():
            for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _json(raw: bytes) -> Any:
    """The decoded body; anything the decoder refuses is a 400 naming the problem."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", code="invalid_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    except ValueError:  # an integer literal past Python's digit limit
        raise ApiError(400, "the request body holds a number too long to read", code="invalid_json") from None


async def _wait(request: Request, job: asyncio.Future, timeout: float) -> str | None:
    """``job``'s answer; None when the client disconnects first; 504 once ``timeout`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        done, _ = await asyncio.wait({job}, timeout=max(0.0, min(_POLL_S, left)))
        if done:
            return job.result()
        if left <= _POLL_S:
            raise ApiError(
                504,
                f"no answer within {timeout:g} s (set by --request-timeout); the request was dropped",
                code="timeout",
                type="server_error",
            )
        if await request.is_disconnected():
            return None


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "selfsynth"}


class ServerThread:
    """Run an app under uvicorn on a background thread: ``with ServerThread(app) as s: s.url``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False)
        )
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, name="selfsynth-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
