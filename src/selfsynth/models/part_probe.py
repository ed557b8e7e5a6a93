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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PartTargets:
    """``labels[i, p]``: value index of part ``p`` in image ``i`` (-100 where hidden)."""

    labels: torch.Tensor
    classes: list[int]  # number of values per part


def part_targets(
    attributes: Sequence[dict[str, str]], visible: Sequence[Sequence[str]], parts: dict[str, list[str]]
) -> PartTargets:
    """Targets from per-image ``{part: value}`` and visible-part lists (``parts``: part -> values)."""
    names = list(parts)
    rows = [
        [parts[p].index(a[p]) if p in vis else -100 for p in names]
        for a, vis in zip(attributes, visible, strict=True)
    ]
    return PartTargets(torch.tensor(rows, dtype=torch.long), [len(parts[p]) for p in names])


class PartProbe(nn.Module):
    """One attention query and one linear classifier per part, over normalised image tokens."""

    def __init__(self, hidden: int, classes: Sequence[int]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.key = nn.Linear(hidden, hidden)
        self.queries = nn.Parameter(torch.randn(len(classes), hidden) * 0.02)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in classes)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.norm(image)  # [B, T, H]
        scores = torch.einsum("ph,bth->bpt", self.queries, self.key(x)) / x.shape[-1] ** 0.5
        pooled = torch.einsum("bpt,bth->bph", scores.softmax(-1), x)
        return [head(pooled[:, k]) for k, head in enumerate(self.heads)]

    def loss(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over parts of the cross-entropy on visible parts (a part hidden batch-wide adds 0)."""
        total = image.new_zeros(())
        for k, logits in enumerate(self(image)):
            y = labels[:, k]
            if (y != -100).any():
                total = total + F.cross_entropy(logits.float(), y, ignore_index=-100)
        return total / len(self.heads)
