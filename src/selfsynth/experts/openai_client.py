"""One client for OpenAI-compatible chat endpoints, over plain urllib: retries, backoff and a secret key.

Both the ``openai`` concept source and the LLM judge talk through it. Robust to what real
endpoints do: 429 and 5xx answers, stalls and dropped connections are retried with capped
exponential backoff (plus a little seeded jitter), honouring ``Retry-After``; malformed bodies
(not JSON, no choices, empty content) are retried too, and so are answers the caller's
``accept`` check refuses. After the last retry the caller's error class names the request, the
endpoint, the last failure and the settings to change. Redirects are never followed (a 3xx is an
error naming where it pointed) and a body over ``MAX_BODY_BYTES`` is refused.

The API key is read from the environment variable named by ``api_key_env`` at call time and
goes only into the Authorization header: it is never part of a cache key, a log record or an
error message (anything a server echoes back is redacted).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from selfsynth.errors import ConfigError, SelfsynthError

if TYPE_CHECKING:
    from selfsynth.config import OpenAIConfig

log = logging.getLogger(__name__)

MAX_WAIT_S = 300.0  # no single wait is longer, whatever the server asks or the backoff reaches
MAX_BODY_BYTES = 8 * 1024 * 1024  # a chat answer is kilobytes; more is a wrong endpoint or a hostile one
REDACTED = "[redacted]"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect, so the Authorization header never travels to another address."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        raise urllib.error.HTTPError(req.full_url, code, msg, headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


class _Retry(Exception):
    """One failed attempt that is worth retrying; ``wait_s`` is the server's Retry-After, if any."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def answer_text(body: bytes) -> str:
    """The assistant text of a chat-completions response; raises _Retry naming what is malformed."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _Retry("a body that is not JSON") from None
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Retry("a JSON body without choices")
    message = choices[0].get("message") or {}
    content: Any = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise _Retry("an empty answer")
    return content


class OpenAIClient:
    """``chat(messages)`` against ``POST {base_url}/chat/completions`` with the retries described above.

    ``setting`` is where these settings live in a run config (``concepts.openai``,
    ``evaluate.judge_api``), so every error names the key to change; ``error`` is the exception
    class raised when a request finally fails; ``note`` is appended to that final message.
    """

    def __init__(
        self,
        cfg: OpenAIConfig,
        *,
        setting: str,
        error: type[SelfsynthError],
        seed: int = 0,
        note: str = "",
    ) -> None:
        if not cfg.base_url or not cfg.model:
            raise ConfigError(
                f"{setting}.base_url and {setting}.model must be set (an OpenAI-compatible endpoint)"
            )
        if cfg.max_retries < 0 or cfg.timeout_s <= 0 or cfg.backoff_s < 0:
            raise ConfigError(f"{setting} needs max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        self.cfg = cfg
        self.setting = setting
        self.error = error
        self.note = note
        self.endpoint = cfg.base_url.rstrip("/") + "/chat/completions"
        self._rng = random.Random(seed)
        self.http_requests = 0  # every HTTP attempt, retries included

    def request_fields(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Everything that determines the answer (never the key): what callers hash into cache keys."""
        return {
            "endpoint": self.endpoint,
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
        }

    def key(self) -> str:
        """The API key from its environment variable ('' when ``api_key_env`` is empty: no key needed)."""
        env = self.cfg.api_key_env
        if not env:
            return ""
        key = os.environ.get(env, "")
        if not key:
            raise self.error(
                f"the environment variable {env} is empty: export your API key there "
                f"(or set {self.setting}.api_key_env= for an endpoint without keys)"
            )
        return key

    @staticmethod
    def redact(text: str, key: str) -> str:
        return text.replace(key, REDACTED) if key else text

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        what: str = "request",
        accept: Callable[[str], str] | None = None,
    ) -> str:
        """The answer text; ``accept(text)`` returns '' to keep it or what is wrong to retry.

        ``what`` names the request in logs and errors (e.g. "expert request for label 'gull'").
        """
        o = self.cfg
        key = self.key()
        payload = json.dumps({"model": o.model, "messages": messages, "temperature": o.temperature}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempts = o.max_retries + 1
        last = "no attempt"
        for attempt in range(attempts):
            try:
                text = self._attempt(what, payload, headers, key)
                problem = accept(text) if accept is not None else ""
                if not problem:
                    return text
                raise _Retry(f"an answer with {problem}")
            except _Retry as r:
                last = self.redact(r.reason, key)
                wait = r.wait_s
            if attempt + 1 < attempts:
                delay = o.backoff_s * 2.0 ** min(attempt, 32) if wait is None else wait
                delay = min(delay + self._rng.uniform(0.0, 0.1 * o.backoff_s), MAX_WAIT_S)
                log.warning(
                    "%s to %s: %s; retry %d/%d in %.1f s",
                    self.redact(what, key),
                    self.endpoint,
                    last,
                    attempt + 1,
                    o.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise self.error(
            self.redact(
                f"{what} to {self.endpoint} failed after {attempts} attempt(s), last: {last}; check that "
                f"the endpoint is up and {self.setting}.model is right, or raise {self.setting}.max_retries "
                f"/ timeout_s{self.note}",
                key,
            )
        )

    def _attempt(self, what: str, payload: bytes, headers: dict[str, str], key: str) -> str:
        """One HTTP request; returns the answer text or raises _Retry (retryable) / the error class (not)."""
        o = self.cfg
        req = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")
        self.http_requests += 1
        try:
            with _OPENER.open(req, timeout=o.timeout_s) as resp:
                body = resp.read(MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                raise self.error(
                    self.redact(
                        f"{what} to {self.endpoint} was redirected with HTTP {e.code} to "
                        f"{e.headers.get('Location') or 'no Location'}; redirects are not followed so the "
                        f"API key stays with {self.setting}.base_url: set it to the final address",
                        key,
                    )
                ) from None
            detail = self.redact(e.read(300).decode("utf-8", "replace"), key).strip()
            if e.code == 429 or e.code >= 500 or e.code == 408:
                raise _Retry(f"HTTP {e.code}", retry_after_s(e.headers.get("Retry-After"))) from None
            fix = {
                401: f"check the API key in ${o.api_key_env}",
                403: f"check the API key in ${o.api_key_env}",
                404: f"check {self.setting}.base_url (usually ends in /v1) and {self.setting}.model",
            }.get(e.code, f"check {self.setting}.model and the request settings")
            raise self.error(
                self.redact(
                    f"{what} to {self.endpoint} was refused with HTTP {e.code} "
                    f"({detail[:200] or 'no body'}): {fix}",
                    key,
                )
            ) from None
        except TimeoutError:
            raise _Retry(f"no answer within timeout_s={o.timeout_s}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retry(f"no answer within timeout_s={o.timeout_s}") from None
            raise _Retry(f"connection error ({e.reason})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            raise _Retry(f"connection error ({type(e).__name__}: {e})") from None
        if len(body) > MAX_BODY_BYTES:
            raise self.error(
                self.redact(
                    f"{what} to {self.endpoint} answered with more than {MAX_BODY_BYTES} bytes; "
                    f"check that {self.setting}.base_url is a chat-completions endpoint",
                    key,
                )
            )
        return answer_text(body)
