"""The OpenAI chat-completions wire format: parse and check a request, build responses and errors.

Requests are checked by hand rather than by a pydantic model so that every rejection is a 4xx
in OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``) with a message that
names the field and the fix; existing OpenAI clients then raise their usual ``BadRequestError``
and friends. Images come as ``data:`` URLs only: the server fetches nothing from the network.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

ROLES = ("system", "developer", "user", "assistant")
DEFAULT_QUESTION = "What is this? Explain why."
# Pillow opens dozens of formats, some through external programs (EPS runs Ghostscript): only
# these plain raster formats are decoded.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)", re.DOTALL)


class ApiError(Exception):
    """A request the server refuses; becomes an OpenAI-shaped JSON error with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:  # noqa: A002 (OpenAI's field name)
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> dict[str, Any]:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; ``selfsynth serve`` flags set them."""

    max_body_bytes: int = 10 << 20
    max_image_px: int = 4096  # longest image side
    max_new_tokens: int = 256
    max_messages: int = 64
    max_prompt_tokens: int = 2048  # the conversation's text, image tokens not counted


@dataclass(frozen=True)
class GenParams:
    """Sampling settings; requests with equal settings can share one batched ``generate`` call."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass
class ChatRequest:
    """A checked request: the image, the text-only turns (image goes into the first user turn)."""

    model: str
    image: Image.Image
    messages: list[dict[str, str]]
    params: GenParams
    stream: bool = False
    include_usage: bool = False

    @property
    def single_turn(self) -> bool:
        return len(self.messages) == 1

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ApiError(
            400,
            f"'{name}' must be a number between {lo} and {hi}, got {value!r}",
            code="invalid_value",
            param=name,
        )
    return float(value)


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer, got {value!r}", code="invalid_value", param=name)
    return value


def parse_params(body: dict[str, Any], limits: Limits) -> GenParams:
    temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0:
        raise ApiError(400, "'top_p' must be above 0", code="invalid_value", param="top_p")
    n = _int(body, "n")
    if n not in (None, 1):
        raise ApiError(
            400, f"'n' must be 1 (one answer per request), got {n}", code="invalid_value", param="n"
        )
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, name)
    if max_tokens is None:
        max_tokens = limits.max_new_tokens
    if max_tokens < 1 or max_tokens > limits.max_new_tokens:
        raise ApiError(
            400,
            f"'{name}' must be between 1 and {limits.max_new_tokens} (the server's limit, "
            f"set by --max-new-tokens), got {max_tokens}",
            code="max_tokens_exceeded",
            param=name,
        )
    seed = _int(body, "seed")
    return GenParams(temperature, top_p, max_tokens, 0 if seed is None else seed)


def decode_image(url: str, limits: Limits) -> Image.Image:
    """A ``data:image/...;base64,...`` URL as an RGB image; any problem is a 400, never a crash."""
    m = _DATA_URL.fullmatch(url.strip())
    if not m:
        raise ApiError(
            400,
            "image_url must be a data URL such as data:image/png;base64,... (the server fetches "
            "nothing from the network)",
            code="invalid_image_url",
            param="messages",
        )
    if not (m["mime"] or "").lower().startswith("image/"):
        raise ApiError(
            400,
            f"image data URL must have an image/* type (data:image/png;base64,...), got {m['mime'] or 'none'!r}",
            code="invalid_image_url",
            param="messages",
        )
    if ";base64" not in m["params"]:
        raise ApiError(
            400,
            "image data URL must be base64-encoded (data:image/png;base64,...)",
            code="invalid_image_url",
            param="messages",
        )
    try:
        raw = base64.b64decode(re.sub(r"\s+", "", m["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "image data URL holds invalid base64", code="invalid_base64", param="messages"
        ) from None
    try:
        im = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        if im.format not in IMAGE_FORMATS:
            raise UnidentifiedImageError(im.format)
        w, h = im.size
        if max(w, h) > limits.max_image_px:
            raise ApiError(
                400,
                f"image is {w}x{h} pixels; the longest side may be at most {limits.max_image_px} "
                "(set by --max-image-px); downscale it first",
                code="image_too_large",
                param="messages",
            )
        return im.convert("RGB")
    except ApiError:
        raise
    except Image.DecompressionBombError:
        raise ApiError(
            400,
            f"image is too large in pixels (longest side limit {limits.max_image_px})",
            code="image_too_large",
            param="messages",
        ) from None
    except UnidentifiedImageError:
        raise ApiError(
            400,
            f"image data is not a {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} image",
            code="invalid_image",
            param="messages",
        ) from None
    except Exception:  # decoders raise many types (EOFError, struct.error...) on damaged data
        raise ApiError(
            400,
            "image data is damaged or truncated and cannot be decoded",
            code="invalid_image",
            param="messages",
        ) from None


def _split_content(content: Any, i: int) -> tuple[str, list[str]]:
    """(text, image URLs) of one message's content: a string or a list of text/image_url parts."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ApiError(
            400,
            f"messages[{i}].content must be a string or a list of parts",
            code="invalid_value",
            param=f"messages[{i}].content",
        )
    texts, urls = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ApiError(
                    400, f"{where}.image_url.url must be a string", code="invalid_value", param=where
                )
            urls.append(url)
        else:
            raise ApiError(
                400,
                f"{where}: unsupported part {kind!r}; use 'text' or 'image_url'",
                code="invalid_value",
                param=where,
            )
    return "\n".join(t for t in texts if t), urls


def parse_request(
    body: Any, limits: Limits, model_id: str, check: Callable[[list[dict[str, str]]], None] | None = None
) -> ChatRequest:
    """Check a decoded JSON body; system text is folded into the first user turn (not every template has one).

    ``check`` sees the final text turns before the image is decoded and may raise ``ApiError``.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model") or model_id
    if model != model_id:
        raise ApiError(
            404,
            f"The model '{model}' does not exist; this server serves '{model_id}' (GET /v1/models)",
            code="model_not_found",
            param="model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", code="invalid_value", param="messages")
    if len(messages) > limits.max_messages:
        raise ApiError(
            400,
            f"at most {limits.max_messages} messages per request",
            code="too_many_messages",
            param="messages",
        )
    params = parse_params(body, limits)
    system, turns, urls = [], [], []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ApiError(
                400,
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                code="invalid_value",
                param=f"messages[{i}].role",
            )
        text, found = _split_content(m.get("content"), i)
        urls += found
        if role in ("system", "developer"):
            system.append(text)
        elif turns and turns[-1]["role"] == role:
            turns[-1]["content"] = "\n".join(t for t in (turns[-1]["content"], text) if t)
        else:
            turns.append({"role": role, "content": text})
    if len(set(urls)) > 1:
        raise ApiError(
            400,
            "one image per conversation: send it in the first user message",
            code="too_many_images",
            param="messages",
        )
    user_text = "".join(t["content"] for t in turns if t["role"] == "user").strip()
    if not urls and not user_text:
        raise ApiError(
            400,
            "the request has neither an image nor text; send an image_url part and a question",
            code="empty_request",
            param="messages",
        )
    if not urls:
        raise ApiError(
            400,
            "this model answers questions about an image; add an image_url part "
            "(data:image/png;base64,...) to the first user message",
            code="image_required",
            param="messages",
        )
    if not turns or turns[0]["role"] != "user" or turns[-1]["role"] != "user":
        raise ApiError(
            400,
            "the conversation must start and end with a user message",
            code="invalid_value",
            param="messages",
        )
    if not turns[-1]["content"].strip():
        turns[-1]["content"] = DEFAULT_QUESTION
    if system:
        turns[0]["content"] = "\n\n".join([*filter(None, system), turns[0]["content"]])
    if check is not None:
        check(turns)
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(model, decode_image(urls[0], limits), turns, params, stream, include_usage)


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(
    cid: str, model: str, answer: str, finish: str, usage: dict[str, int], extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
        **extra,
    }


def chunks(
    cid: str, model: str, answer: str, finish: str, usage: dict[str, int] | None, extra: dict[str, Any]
) -> list[dict[str, Any]]:
    """The answer as ``chat.completion.chunk`` objects: role, a few words each, then the finish reason."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **more: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **more,
        }

    out = [chunk({"role": "assistant", "content": ""})]
    pieces = re.findall(r"\s*\S+", answer) + (
        [answer[len(answer.rstrip()) :]] if answer != answer.rstrip() else []
    )
    out += [chunk({"content": "".join(pieces[i : i + 4])}) for i in range(0, len(pieces), 4)]
    out.append(chunk({}, finish, **extra))
    if usage is not None:
        out.append(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    return out
