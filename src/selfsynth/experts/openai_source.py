"""The ``openai`` concept source: any OpenAI-compatible chat-completions endpoint, one request per label.

Requests go through :class:`selfsynth.experts.openai_client.OpenAIClient` (retries, Retry-After,
a key that stays in its environment variable). An answer with too few bullets is retried like
a malformed body; after the last retry an ExpertError names the label, the endpoint, the last
failure and the fix. The cache key is the request without the key, so a cached answer never
holds a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsynth.errors import ExpertError
from selfsynth.experts.base import CachedLLMSource
from selfsynth.experts.openai_client import OpenAIClient

if TYPE_CHECKING:
    from selfsynth.config import ConceptsConfig


class OpenAISource(CachedLLMSource):
    """Concepts from ``POST {base_url}/chat/completions``, one request per uncached label."""

    name = "openai"

    def __init__(self, cfg: ConceptsConfig, cache_path: Path | None, *, seed: int = 0) -> None:
        super().__init__(cfg, cache_path)
        self.client = OpenAIClient(
            cfg.openai,
            setting="concepts.openai",
            error=ExpertError,
            seed=seed,
            note=" (answers already received are cached)",
        )
        self.endpoint = self.client.endpoint

    @property
    def http_requests(self) -> int:
        """Every HTTP attempt, retries included."""
        return self.client.http_requests

    def request_fields(self, label: str) -> dict[str, Any]:
        return self.client.request_fields(self.messages(label))

    def ask(self, label: str, messages: list[dict[str, str]]) -> tuple[list[str], str]:
        text = self.client.chat(
            messages,
            what=f"expert request for label {label!r}",
            accept=lambda t: self.check_answer(t)[1],
        )
        concepts, _ = self.check_answer(text)  # accepted above, so never None
        return concepts or [], text
