"""Plain records that flow between stages: examples, concept banks, questions and answers.

They are dataclasses with ``to_dict`` / ``from_dict`` so every stage can write them as JSON lines
that a person can read, and resume from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Example:
    """One labelled image. ``image`` is an absolute path, resolved and checked by the loader."""

    id: str
    image: str
    label: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        return cls(
            id=str(d["id"]), image=d["image"], label=d["label"], split=d["split"], meta=d.get("meta", {})
        )


@dataclass
class QA:
    """A training pair: the model sees ``image`` and ``question`` and must produce ``answer``."""

    id: str
    image: str
    question: str
    answer: str
    label: str
    kind: str = "explain"  # simple | explain | cot | fallback
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QA:
        return cls(
            **{k: d[k] for k in ("id", "image", "question", "answer", "label")},
            kind=d.get("kind", "explain"),
            meta=d.get("meta", {}),
        )
