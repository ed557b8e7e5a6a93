"""An optional LLM judge for EE and CS, as the paper scored them: any OpenAI-compatible chat endpoint.

Off by default (the rule-based EE and the embedding CS in ``selfsynth.metrics.answers`` need no network).
Each request goes through plain urllib to ``{base_url}/chat/completions``; answers are cached in
SQLite under a hash of the request (endpoint, model, messages, temperature: never the key), so a
report or a rerun never pays twice. The API key is read from the environment variable named by
``api_key_env`` at call time and only ever goes into the Authorization header.

- EE judge: "does the answer give at least one visual reason beyond the class name?" -> yes/no
- CS judge: "how well do the answer's visual features agree with the true class's expert
  features?" -> an integer 0..10, divided by 10
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from selfsynth.cache import SqliteStore
from selfsynth.config import OpenAIConfig
from selfsynth.errors import ConfigError, SelfsynthError

log = logging.getLogger(__name__)
_NS = "judge"

EE_PROMPT = (
    "A model was asked about an image: {question}\nIts answer: {answer}\n\n"
    "Does the answer give at least one visual reason (a visible feature of the object, such as a "
    "colour, shape, marking or part) beyond naming the class? Reply with only yes or no."
)
CS_PROMPT = (
    "The image truly shows a {label}. An expert lists its visual features:\n{concepts}\n\n"
    "A model answered: {answer}\n\n"
    "Ignoring whether the model named the class correctly, rate from 0 to 10 how well the visual "
    "features the answer describes agree with the expert's features (0 = none or contradicting, "
    "10 = all described features match). Reply with only the number."
)


class JudgeError(SelfsynthError):
    """The judge endpoint failed after its retries or answered something unparseable."""


def parse_yes_no(text: str) -> int | None:
    m = re.search(r"\b(yes|no)\b", text.strip().lower())
    return None if m is None else int(m.group(1) == "yes")


def parse_score(text: str) -> float | None:
    m = re.search(r"\b(10|[0-9])(?:\.\d+)?\b", text)
    return None if m is None else float(m.group(0)) / 10.0


class Judge:
    """``score(rows, bank)`` -> ``[{"ee": 0|1|None, "cs": float|None}]``; one cached request per question."""

    def __init__(self, cfg: OpenAIConfig, cache_path: str | Path | None = None) -> None:
        if not cfg.base_url or not cfg.model:
            raise ConfigError("the judge needs base_url and model (an OpenAI-compatible endpoint)")
        self.cfg = cfg
        self.endpoint = cfg.base_url.rstrip("/") + "/chat/completions"
        self._store = SqliteStore(cache_path) if cache_path is not None else None
        self.requests_made = 0

    def _key(self) -> str:
        env = self.cfg.api_key_env
        key = os.environ.get(env, "") if env else ""
        if env and not key:
            raise ConfigError(f"the environment variable {env} is empty: export the judge's API key there")
        return key

    def ask(self, prompt: str) -> str:
        """The endpoint's answer to one user prompt, from the cache when it was asked before."""
        messages = [{"role": "user", "content": prompt}]
        request = {
            "endpoint": self.endpoint,
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
        }
        ck = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if self._store is not None and (hit := self._store.get(_NS, ck)) is not None:
            return hit.decode("utf-8")
        text = self._post(messages)
        if self._store is not None:
            self._store.put(_NS, ck, text.encode("utf-8"))
        return text

    def _post(self, messages: list[dict[str, str]]) -> str:
        key = self._key()
        body = json.dumps(
            {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            self.requests_made += 1
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    obj = json.loads(resp.read().decode("utf-8"))
                content = obj["choices"][0]["message"]["content"]
                if isinstance(content, str) and content.strip():
                    return content
                last = "an empty answer"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code not in (408, 429) and e.code < 500:
                    break
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                last = type(e).__name__  # never the message: a server may echo the request
            if attempt < self.cfg.max_retries:
                time.sleep(self.cfg.backoff_s * 2**attempt)
        raise JudgeError(
            f"judge request to {self.endpoint} failed ({last}); check base_url, model and the key in "
            f"${self.cfg.api_key_env}, or run without the judge"
        )

    def score(
        self, rows: Sequence[Mapping[str, Any]], bank: Mapping[str, Sequence[str]], progress: bool = False
    ) -> list[dict[str, Any]]:
        out = []
        for r in tqdm(rows, desc="judge", disable=not progress):
            answer = r.get("answer") or ""
            ee = parse_yes_no(self.ask(EE_PROMPT.format(question=r.get("question", ""), answer=answer)))
            concepts = bank.get(r["label"], ())
            cs = None
            if concepts:
                listing = "\n".join(f"- {c}" for c in concepts)
                cs = parse_score(
                    self.ask(CS_PROMPT.format(label=r["label"], concepts=listing, answer=answer))
                )
            out.append({"ee": ee, "cs": cs})
        return out

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
