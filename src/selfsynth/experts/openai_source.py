"""The ``openai`` concept source: any OpenAI-compatible chat-completions endpoint, over plain urllib.

Robust to what real endpoints do: 429 and 5xx answers, stalls and dropped connections are
retried with exponential backoff (plus a little seeded jitter), honouring ``Retry-After``;
malformed bodies (not JSON, no choices, empty content, no bullets) are retried too. After the
last retry an ExpertError names the label, the endpoint, the last failure and the fix.

The API key is read from the environment variable ``cfg.openai.api_key_env`` at call time and
goes only into the Authorization header: it is never part of the cache key, the cache file, a
log record or an error message (anything echoed back by a server is redacted).
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
from pathlib import Path
from typing import Any

from selfsynth.config import ConceptsConfig
from selfsynth.errors import ConfigError, ExpertError
from selfsynth.experts.sources import CachedLLMSource

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 300.0  # a server asking for more than this is treated as down


class _Retry(Exception):
    """One failed attempt that is worth retrying; ``wait_s`` is the server's Retry-After, if any."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
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


def _content(body: bytes) -> str:
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


class OpenAISource(CachedLLMSource):
    """Concepts from ``POST {base_url}/chat/completions``, one request per uncached label."""

    name = "openai"

    def __init__(self, cfg: ConceptsConfig, cache_path: Path | None, *, seed: int = 0) -> None:
        super().__init__(cfg, cache_path)
        o = cfg.openai
        if not o.base_url or not o.model:
            raise ConfigError(
                "concepts.openai.base_url and concepts.openai.model must be set for source=openai"
            )
        if o.max_retries < 0 or o.timeout_s <= 0 or o.backoff_s < 0:
            raise ConfigError("concepts.openai needs max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        self.endpoint = o.base_url.rstrip("/") + "/chat/completions"
        self._rng = random.Random(seed)
        self.http_requests = 0  # every HTTP attempt, retries included

    def request_fields(self, label: str) -> dict[str, Any]:
        o = self.cfg.openai
        return {
            "endpoint": self.endpoint,
            "model": o.model,
            "messages": self.messages(label),
            "temperature": o.temperature,
        }

    def _key(self) -> str:
        env = self.cfg.openai.api_key_env
        if not env:
            return ""  # a local endpoint that needs no key
        key = os.environ.get(env, "")
        if not key:
            raise ExpertError(
                f"the environment variable {env} is empty: export your API key there "
                "(or set concepts.openai.api_key_env= for an endpoint without keys)"
            )
        return key

    def _redact(self, text: str, key: str) -> str:
        return text.replace(key, "[redacted]") if key else text

    def ask(self, label: str, messages: list[dict[str, str]]) -> tuple[list[str], str]:
        o = self.cfg.openai
        key = self._key()
        payload = json.dumps({"model": o.model, "messages": messages, "temperature": o.temperature}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempts = o.max_retries + 1
        last = "no attempt"
        for attempt in range(attempts):
            try:
                text = self._attempt(label, payload, headers, key)
                concepts, problem = self.check_answer(text)
                if concepts is not None:
                    return concepts, text
                raise _Retry(f"an answer with {problem}")
            except _Retry as r:
                last = self._redact(r.reason, key)
                wait = r.wait_s
            if attempt + 1 < attempts:
                delay = o.backoff_s * (2**attempt) if wait is None else min(wait, MAX_RETRY_AFTER_S)
                delay += self._rng.uniform(0.0, 0.1 * o.backoff_s)
                log.warning(
                    "expert %s for %r: %s; retry %d/%d in %.1f s",
                    self.endpoint,
                    label,
                    last,
                    attempt + 1,
                    o.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise ExpertError(
            f"expert request for label {label!r} to {self.endpoint} failed after {attempts} attempt(s), "
            f"last: {last}; check that the endpoint is up and concepts.openai.model is right, or raise "
            "concepts.openai.max_retries / timeout_s (answers already received are cached)"
        )

    def _attempt(self, label: str, payload: bytes, headers: dict[str, str], key: str) -> str:
        """One HTTP request; returns the answer text or raises _Retry (retryable) / ExpertError (not)."""
        o = self.cfg.openai
        req = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")
        self.http_requests += 1
        try:
            with urllib.request.urlopen(req, timeout=o.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            detail = self._redact(e.read()[:300].decode("utf-8", "replace"), key).strip()
            if e.code == 429 or e.code >= 500 or e.code == 408:
                raise _Retry(f"HTTP {e.code}", _retry_after(e.headers.get("Retry-After"))) from None
            fix = {
                401: f"check the API key in ${o.api_key_env}",
                403: f"check the API key in ${o.api_key_env}",
                404: "check concepts.openai.base_url (usually ends in /v1) and concepts.openai.model",
            }.get(e.code, "check concepts.openai.model and the request settings")
            raise ExpertError(
                f"expert request for label {label!r} to {self.endpoint} was refused with HTTP "
                f"{e.code} ({detail[:200] or 'no body'}): {fix}"
            ) from None
        except TimeoutError:
            raise _Retry(f"no answer within timeout_s={o.timeout_s}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retry(f"no answer within timeout_s={o.timeout_s}") from None
            raise _Retry(f"connection error ({e.reason})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            raise _Retry(f"connection error ({type(e).__name__}: {e})") from None
        return _content(body)
