"""Checks made before a request reaches a route: Host header, API key, JSON content type, crash bodies.

``Guard`` is a plain ASGI middleware so it sees every request (also unknown paths) and never
buffers a response. The Host check stops DNS rebinding: a page on another site that resolves its
own name to 127.0.0.1 still sends its own name as Host. Requiring ``application/json`` on POST
forces browsers into a CORS preflight, which this server never grants, so other sites cannot post
to it. Any exception a route lets through becomes a generic 500 carrying a request id; the
details go to the log only, never into the body.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import uuid
from collections.abc import Collection, Sequence
from typing import Any

log = logging.getLogger(__name__)

API_KEY_ENV = "SELFSYNTH_API_KEY"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
OPEN_PATHS = ("/", "/health")  # the page itself asks for the key; health checks run without one


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> frozenset[str] | None:
    """Host names the server answers to when bound to ``bind``; None means any.

    A loopback bind also answers to the other loopback names; a wildcard bind (0.0.0.0, ::)
    answers to anything unless ``extra`` (``--allowed-hosts``) lists names; ``*`` allows all.
    """
    names = {h.strip().strip("[]").lower() for h in extra if h.strip()}
    if "*" in names:
        return None
    if bind in WILDCARD_BINDS:
        return frozenset(names) or None
    names.add(bind.strip("[]").lower())
    if is_loopback(bind):
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _error(message: str, code: str, type: str = "invalid_request_error") -> dict[str, Any]:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


class Guard:
    """ASGI middleware: Host allow-list, bearer API key, JSON-only POST bodies, request ids, safe 500s."""

    def __init__(self, app: Any, *, api_key: str | None = None, hosts: Collection[str] | None = None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None
        self.hosts = frozenset(hosts) if hosts is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req-" + uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refuse(scope, headers)
        started = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())],
                }
            await send(message)

        if refusal is not None:
            await _send_json(send_with_id, *refusal)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s %s failed (request id %s)", scope["method"], scope["path"], rid)
            if started:
                raise
            body = _error(f"internal error (request id {rid})", "internal_error", type="server_error")
            await _send_json(send_with_id, 500, body)

    def _refuse(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict, dict] | None:
        """(status, body, extra headers) of a refusal, or None to let the request through."""
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            message = "this server does not answer to that Host name (see --allowed-hosts)"
            return 421, _error(message, "invalid_host"), {}
        if self._key is not None and scope["path"] not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), self._key):
                message = "missing or wrong API key; send it as the header 'Authorization: Bearer KEY'"
                return 401, _error(message, "invalid_api_key"), {"www-authenticate": "Bearer"}
        if scope["method"] == "POST" and not is_json(headers.get("content-type", "")):
            message = "the request body must be JSON, sent with 'Content-Type: application/json'"
            return 415, _error(message, "unsupported_media_type"), {}
        return None


async def _send_json(
    send: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def reserved_tokens(backend: Any) -> tuple[str, ...]:
    """The tokenizer's special-token strings (image placeholder included) that user text may not hold."""
    processor = getattr(backend, "processor", None)
    tok = getattr(processor, "tokenizer", None)
    found: set[str] = set()
    if tok is not None:
        found.update(getattr(tok, "all_special_tokens", []) or [])
        decoder = getattr(tok, "added_tokens_decoder", None) or {}
        found.update(t.content for t in decoder.values() if getattr(t, "special", False))
    for name in ("image_token", "video_token", "boi_token", "eoi_token"):
        value = getattr(processor, name, None)
        if isinstance(value, str):
            found.add(value)
    return tuple(sorted((t for t in found if isinstance(t, str) and t.strip()), key=lambda t: (-len(t), t)))
