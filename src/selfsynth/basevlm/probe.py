"""An auxiliary per-part classifier on the projector's image tokens, used only while pretraining.

Why: a decoder trained from scratch learns the caption language in a few hundred steps but
takes thousands more to bind image tokens to the part words ("its crown is *blue*"); on 2 CPU
cores that is most of the budget. This head gives the projector a direct signal: for each part
a learned query attends over the image tokens and a linear layer predicts the part's value
(visible parts only, from the world's ground truth, the same facts the captions state). The
projector then lays the image tokens out so that attention can read part values off them, which
the decoder's own attention learns to do quickly. The head is not part of the saved model: the
checkpoint stays a stock LLaVA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PartTargets:
    """``labels[i, p]``: value index of part ``p`` in image ``i`` (-100 where hidden)."""

    labels: torch.Tensor
    classes: list[int]  # number of values per part
    # the words of each value, per part (same order as the labels' indices), for the
    # word readout; empty: linear heads only
    words: list[list[str]] = field(default_factory=list)


def part_targets(
    attributes: Sequence[dict[str, str]],
    visible: Sequence[Sequence[str]],
    parts: dict[str, list[str]],
    words: dict[str, dict[str, str]] | None = None,
) -> PartTargets:
    """Targets from per-image ``{part: value}`` and visible-part lists (``parts``: part -> values).

    ``words`` (part -> value -> wording) names the values for the word readout; a value
    without an entry is named by itself.
    """
    names = list(parts)
    rows = [
        [parts[p].index(a[p]) if p in vis else -100 for p in names]
        for a, vis in zip(attributes, visible, strict=True)
    ]
    named = [[words.get(p, {}).get(v, v) for v in parts[p]] for p in names] if words is not None else []
    return PartTargets(torch.tensor(rows, dtype=torch.long), [len(parts[p]) for p in names], named)


class PartProbe(nn.Module):
    """One attention query per part over the image tokens, then a classifier per part.

    Two readouts. ``linear``: a linear layer per part on the normalised, pooled tokens.
    ``words`` (``value_tokens`` and ``embedding`` given): the pooled raw tokens are scored
    against the decoder's own embeddings of the value words (cosine, learned scale), so the
    projector must put each part's value into the image tokens *as the word for it*. Why: the
    decoder's output layer is tied to those embeddings, and after the text-only drills it
    already knows how to copy a token it attends to; image tokens that look like "red" where
    the crown is are read the same way.
    """

    def __init__(
        self,
        hidden: int,
        classes: Sequence[int],
        *,
        value_tokens: Sequence[Sequence[Sequence[int]]] | None = None,
        embedding: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.key = nn.Linear(hidden, hidden)
        self.queries = nn.Parameter(torch.randn(len(classes), hidden) * 0.02)
        self.words = value_tokens is not None
        if self.words:
            if embedding is None or len(value_tokens) != len(classes):
                raise ValueError(
                    "the word readout needs the embedding and one token list per value of every part"
                )
            # a list, not an attribute: the embedding is the decoder's, trained there, not here
            self._embedding = [embedding]
            self._tokens = [[torch.as_tensor(ids, dtype=torch.long) for ids in part] for part in value_tokens]
            self.scale = nn.Parameter(torch.tensor(10.0))
        else:
            self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in classes)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.norm(image)  # [B, T, H]
        weights = (torch.einsum("ph,bth->bpt", self.queries, self.key(x)) / x.shape[-1] ** 0.5).softmax(-1)
        if not self.words:
            pooled = torch.einsum("bpt,bth->bph", weights, x)
            return [head(pooled[:, k]) for k, head in enumerate(self.heads)]
        pooled = F.normalize(torch.einsum("bpt,bth->bph", weights, image), dim=-1)
        table = self._embedding[0].weight
        out = []
        for k, part in enumerate(self._tokens):
            values = F.normalize(torch.stack([table[ids].mean(0) for ids in part]), dim=-1)
            out.append(self.scale * pooled[:, k] @ values.T.to(pooled.dtype))
        return out

    def loss(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over parts of the cross-entropy on visible parts (a part hidden batch-wide adds 0)."""
        total = image.new_zeros(())
        logits_all = self(image)
        for k, logits in enumerate(logits_all):
            y = labels[:, k]
            if (y != -100).any():
                total = total + F.cross_entropy(logits.float(), y, ignore_index=-100)
        return total / len(logits_all)
