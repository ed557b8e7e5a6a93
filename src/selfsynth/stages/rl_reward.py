"""The RL round's reward and GRPO's group-normalised advantages: pure functions of text and numbers.

reward = 1[the answer names the image's label as its class]
       + cite_bonus x min(#cited concepts in the image's Z*, cite_cap)
       - outside_penalty x #cited concepts outside Z*

The second and third terms are the paper's contrastive score (pull towards Z*, push away from
the rest of the concept bank) turned into a count of what the answer cites: a concept of Z* is
evidence the describe/select stages saw in this very image, any other bank concept (of this
class or another) is a claim nothing in the image backs. The cap keeps a model from earning
more by listing every concept it knows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from selfsynth.stages.rs_score import split_by_zstar
from selfsynth.text import names_label

Citer = Callable[[str, list[str]], list[str]]
ADV_EPS = 1e-4  # keeps a group of near-equal rewards from blowing its advantages up


@dataclass(frozen=True)
class Reward:
    """One answer's reward and the parts it is made of (for the training log)."""

    value: float
    correct: bool
    grounded: tuple[str, ...]  # cited concepts of the image's Z*
    outside: tuple[str, ...]  # cited concepts outside it


def reward(
    answer: str,
    label: str,
    labels: Sequence[str],
    selected: Sequence[str],
    phrases: Sequence[str],
    citer: Citer,
    *,
    cite_bonus: float,
    cite_cap: int,
    outside_penalty: float,
) -> Reward:
    """Score ``answer`` for an image of ``label`` whose Z* is ``selected``.

    ``phrases`` is what the citer may find (every concept of the bank); ``cite_cap`` <= 0 means
    no cap. Concepts compare after ``text.normalize``, as the grounding metrics compare them.
    """
    correct = names_label(answer, label, labels)
    pool = list(dict.fromkeys([*phrases, *selected]))
    grounded, outside = (tuple(part) for part in split_by_zstar(citer(answer, pool), selected))
    earned = len(grounded) if cite_cap <= 0 else min(len(grounded), cite_cap)
    value = float(correct) + cite_bonus * earned - outside_penalty * len(outside)
    return Reward(value, correct, grounded, outside)


def group_advantages(rewards: Sequence[float], group: int, eps: float = ADV_EPS) -> list[float]:
    """(r - group mean) / (group std + eps) over consecutive groups of ``group`` rewards.

    The population std (ddof 0): a group's advantages then have mean 0 and, unless the group is
    constant, a root mean square just under 1. A group whose answers all scored the same teaches
    nothing and gets zeros.
    """
    if group < 1 or len(rewards) % group:
        raise ValueError(f"{len(rewards)} rewards do not make groups of {group}")
    r = np.asarray(rewards, dtype=np.float64).reshape(-1, group)
    centred = r - r.mean(axis=1, keepdims=True)
    varied = np.ptp(r, axis=1, keepdims=True) > 0  # exactly 0 otherwise: a rounded mean leaves dust
    adv = np.divide(centred, r.std(axis=1, keepdims=True) + eps, out=np.zeros_like(r), where=varied)
    return [float(a) for a in adv.reshape(-1)]
