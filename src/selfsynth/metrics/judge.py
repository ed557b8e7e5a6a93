"""An optional LLM judge for EE and CS, as the paper scored them: any OpenAI-compatible chat endpoint.

Off by default (``evaluate.judge=false``: the rule-based EE and the embedding CS in
``selfsynth.metrics.answers`` need no network). With ``evaluate.judge=true`` the evaluate stage
builds one from ``evaluate.judge_api`` (:func:`make_judge`). Requests go through the shared
:class:`selfsynth.experts.openai_client.OpenAIClient` (retries, Retry-After, the key read from
the variable ``api_key_env`` names and redacted from every message); answers are cached in
SQLite under a hash of the request (endpoint, model, messages, temperature: never the key), so a
report or a rerun never pays twice.

A body that is not a chat completion is retried, and after the last retry the stage stops with a
JudgeError naming the endpoint and the fix (a half-judged round would give a mean over fewer
rows than it claims). A well-formed reply that is not yes/no (EE) or a number 0..10 (CS) is
that row's ``None``: it is left out of the mean, like a class with no expert concepts.

- EE judge: "does the answer give at least one visual reason beyond the class name?" -> yes/no
- CS judge: "how well do the answer's visual features agree with the true class's expert
  features?" -> an integer 0..10, divided by 10
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from selfsynth.cache import SqliteStore
from selfsynth.errors import SelfsynthError
from selfsynth.experts.openai_client import OpenAIClient

if TYPE_CHECKING:
    from selfsynth.config import EvaluateConfig, OpenAIConfig

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
    """The judge endpoint refused a request, or failed after its retries."""


def parse_yes_no(text: str) -> int | None:
    m = re.search(r"\b(yes|no)\b", text.strip().lower())
    return None if m is None else int(m.group(1) == "yes")


def parse_score(text: str) -> float | None:
    m = re.search(r"\b(10|[0-9])(?:\.\d+)?\b", text)
    return None if m is None else float(m.group(0)) / 10.0


class Judge:
    """``score(rows, bank)`` -> ``[{"ee": 0|1|None, "cs": float|None}]``; one cached request per question."""

    def __init__(
        self, cfg: OpenAIConfig, cache_path: str | Path | None = None, *, setting: str = "evaluate.judge_api"
    ) -> None:
        self.cfg = cfg
        self.client = OpenAIClient(
            cfg, setting=setting, error=JudgeError, note=", or set evaluate.judge=false"
        )
        self.endpoint = self.client.endpoint
        self.client.key()  # a missing key stops the stage now, before the model answers anything
        self._store = SqliteStore(cache_path) if cache_path is not None else None
        self.requests_made = 0  # questions actually sent (cache misses), for logs and tests

    def ask(self, prompt: str) -> str:
        """The endpoint's answer to one user prompt, from the cache when it was asked before."""
        messages = [{"role": "user", "content": prompt}]
        request = self.client.request_fields(messages)
        ck = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if self._store is not None and (hit := self._store.get(_NS, ck)) is not None:
            return hit.decode("utf-8")
        text = self.client.chat(messages, what="judge request")
        self.requests_made += 1
        if self._store is not None:
            self._store.put(_NS, ck, text.encode("utf-8"))
        return text

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
        log.info(
            "judge %s: %d questions sent so far, the rest from its cache", self.endpoint, self.requests_made
        )
        return out

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def make_judge(cfg: EvaluateConfig, cache_dir: Path) -> Judge | None:
    """The judge ``evaluate.judge`` asks for, caching in ``cache_dir/judge.sqlite``; None when it is off."""
    if not cfg.judge:
        return None
    return Judge(cfg.judge_api, cache_dir / "judge.sqlite")
