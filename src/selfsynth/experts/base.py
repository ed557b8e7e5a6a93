"""The base classes of the concept sources, and the bullet parser every LLM-backed source shares.

A source's ``concepts(labels)`` maps each label to its concept phrases. ``CachedLLMSource`` asks
one question per label, parses the bulleted answer with :func:`parse_bullets`, and keeps every
parsed answer in a SQLite cache keyed by a hash of the request, committed as each label
finishes: a rerun or a crashed run never pays for the same call twice. Concrete sources live in
their own modules and are built by :func:`selfsynth.experts.factory.make_source`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from selfsynth.cache import SqliteStore
from selfsynth.errors import ConfigError

if TYPE_CHECKING:  # the settings are only read here, so config stays free to import this package
    from selfsynth.config import ConceptsConfig

log = logging.getLogger(__name__)

_BULLET = re.compile(r"^\s*(?:[-*+•‣◦▪–]|\d{1,3}[.)])\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_CACHE_NS = "expert"


def parse_bullets(text: str) -> list[str]:
    """The bullet items of an LLM answer, cleaned: one concept phrase each, first occurrence kept.

    Bullets are "-", "*", "+", "•", "1." or "1)"; lines that are not bullets (preamble, closing
    remarks) and headings (markdown "#" lines, items ending in ":") are dropped; bold markers
    are stripped, whitespace collapsed, trailing periods trimmed, duplicates (ignoring case)
    removed.
    """
    out: list[str] = []
    seen: set[str] = set()
    for line in (text or "").splitlines():
        m = _BULLET.match(line)
        if not m:
            continue
        item = _BOLD.sub(lambda b: b.group(1) or b.group(2), m.group(1))
        item = " ".join(item.replace("`", "").split()).rstrip(" .;,")
        if not item or item.endswith(":") or item.startswith("#"):
            continue
        key = item.casefold()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


class ConceptSource:
    """Where concepts come from; ``concepts`` returns ``{label: [phrases]}`` for the labels it has."""

    name = "base"

    def concepts(self, labels: list[str], progress: bool = False) -> dict[str, list[str]]:
        raise NotImplementedError


class CachedLLMSource(ConceptSource):
    """One prompt per label to a language model; parsed answers cached under a hash of the request."""

    name = "llm"

    def __init__(self, cfg: ConceptsConfig, cache_path: Path | None) -> None:
        if "{label}" not in cfg.prompt:
            raise ConfigError("concepts.prompt must contain {label}, where the class name goes")
        self.cfg = cfg
        self.min_concepts = max(1, cfg.min_concepts)
        self._store = SqliteStore(cache_path) if cache_path is not None else None
        self.requests_made = 0  # calls actually paid for (cache misses), for logs and tests

    def messages(self, label: str) -> list[dict[str, str]]:
        # str.replace, not str.format: a prompt may contain other braces (JSON examples).
        return [{"role": "user", "content": self.cfg.prompt.replace("{label}", label)}]

    def request_fields(self, label: str) -> dict[str, Any]:
        """Everything that determines the answer (never a secret): hashed into the cache key."""
        raise NotImplementedError

    def ask(self, label: str, messages: list[dict[str, str]]) -> tuple[list[str], str]:
        """(parsed concepts, raw answer text) for one label, or raise ExpertError."""
        raise NotImplementedError

    def cache_key(self, label: str) -> str:
        blob = json.dumps(self.request_fields(label), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def check_answer(self, text: str) -> tuple[list[str] | None, str]:
        """(concepts, "") when the answer has enough bullets, else (None, what is wrong)."""
        concepts = parse_bullets(text)
        if not concepts:
            return None, "no bullet points"
        if len(concepts) < self.min_concepts:
            return None, f"only {len(concepts)} bullet points (concepts.min_concepts={self.min_concepts})"
        return concepts, ""

    def concepts(self, labels: list[str], progress: bool = False) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        todo: list[tuple[str, str]] = []
        cached = (
            self._store.get_many(_CACHE_NS, [self.cache_key(lab) for lab in labels]) if self._store else {}
        )
        for lab in labels:
            key = self.cache_key(lab)
            if key in cached:
                out[lab] = json.loads(cached[key])["concepts"]
            else:
                todo.append((lab, key))
        if cached:
            log.info("expert cache: %d of %d labels already answered", len(labels) - len(todo), len(labels))
        for lab, key in tqdm(todo, desc=f"expert ({self.name})", unit="label", disable=not progress):
            concepts, raw = self.ask(lab, self.messages(lab))
            self.requests_made += 1
            out[lab] = concepts
            if self._store is not None:  # committed now: a crash on the next label loses nothing
                row = {"label": lab, "source": self.name, "concepts": concepts, "answer": raw}
                self._store.put(_CACHE_NS, key, json.dumps(row, ensure_ascii=False).encode("utf-8"))
        return {lab: out[lab] for lab in labels}

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
