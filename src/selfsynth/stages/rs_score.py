"""The rejection-sampling score: how well a candidate answer matches the image's selected concepts.

For a candidate answer y (embedded), the image's selected concepts Z* (positives) and a set of
negative concepts (method.md step 6)::

    score(y) = sum_{z in Z*} log( e^{y.z/tau} / (e^{y.z/tau} + sum_{c in Neg} e^{y.c/tau}) )

Higher is better: the answer is close to this image's concepts and far from the others. Each term
is computed as -softplus(logsumexp(Neg) - y.z/tau), which never overflows and is exactly 0 when
there are no negatives.

Which concepts are negatives is a setting (``sample.negatives``): ``class_rest`` is the poster's
Z_c minus Z* (default), ``all_rest`` every concept of every class except Z*, ``all`` every concept
of every class with Z* included, as the reference code did by mistake (kept for the ablation).

An extension, off by default (``sample.outside_penalty`` = lambda > 0)::

    score'(y) = score(y) - lambda * |cited(y) - Z*| + mu * |cited(y) & Z*|

where cited(y) are the concept phrases of ANY class that y cites (the dataset's citer, else
``metrics.grounding.cite_phrases``). The embedding score rewards an answer for being near Z*
as a whole, so an answer that adds a concept the image does not show loses little; the
penalty makes each concept outside Z* cost the same, whichever class it belongs to. The bonus
(``sample.cite_bonus`` = mu, also off by default) pays for each concept of Z* cited, as the RL
round's reward does: the embedding score does not grow with the number of right concepts named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from selfsynth.errors import ConfigError, DataError
from selfsynth.text import normalize

NEGATIVE_MODES = ("class_rest", "all_rest", "all")


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """log sum exp along the last axis; -inf for an empty axis."""
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], -np.inf, dtype=x.dtype)
    top = x.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[..., 0]


def rs_scores(answer_embs: np.ndarray, pos_emb: np.ndarray, neg_emb: np.ndarray, tau: float) -> np.ndarray:
    """Scores of A answers (A, d) against the same positives (P, d) and negatives (N, d): shape (A,)."""
    if tau <= 0:
        raise ConfigError(f"tau must be > 0, got {tau}")
    y = np.atleast_2d(np.asarray(answer_embs, dtype=np.float32))
    pos = np.asarray(pos_emb, dtype=np.float32).reshape(-1, y.shape[1])
    neg = np.asarray(neg_emb, dtype=np.float32).reshape(-1, y.shape[1])
    inv_tau = np.float32(1.0 / tau)
    a = (y @ pos.T) * inv_tau  # (A, P)
    lse_neg = _logsumexp_rows((y @ neg.T) * inv_tau)  # (A,)
    terms = -np.logaddexp(np.float32(0.0), lse_neg[:, None] - a)  # log(e^a / (e^a + sum_neg))
    return terms.sum(axis=1, dtype=np.float32)


def rs_score(answer_emb: np.ndarray, pos_emb: np.ndarray, neg_emb: np.ndarray, tau: float) -> float:
    """The score of one answer embedding (d,); see the module docstring for the formula."""
    return float(rs_scores(np.asarray(answer_emb).reshape(1, -1), pos_emb, neg_emb, tau)[0])


def negatives(mode: str, label: str, selected: Sequence[str], bank: Mapping[str, Sequence[str]]) -> list[str]:
    """The negative concepts for an image of ``label`` whose selected concepts are ``selected``.

    Concepts are compared as strings; the result keeps the bank's order and lists each phrase once
    (Neg is a set in the formula, so a phrase shared by two classes must not count twice).
    """
    if mode not in NEGATIVE_MODES:
        raise ConfigError(f"sample.negatives={mode!r} is not one of {', '.join(NEGATIVE_MODES)}")
    if label not in bank:
        raise DataError(
            f"label {label!r} has no concepts in the concept bank: add it or check the label spelling"
        )
    chosen = set(selected)
    if mode == "class_rest":
        pool: list[str] = list(bank[label])
    else:
        pool = [c for concepts in bank.values() for c in concepts]
    if mode != "all":
        pool = [c for c in pool if c not in chosen]
    return list(dict.fromkeys(pool))


def split_by_zstar(cited: Sequence[str], selected: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(in Z*, outside Z*)`` of the cited concepts, compared after ``text.normalize``."""
    chosen = {normalize(z) for z in selected}
    inside = [c for c in cited if normalize(c) in chosen]
    return inside, [c for c in cited if normalize(c) not in chosen]


def zstar_counts(
    candidates: Sequence[str],
    selected: Sequence[str],
    phrases: Sequence[str],
    citer: Callable[[str, list[str]], list[str]],
) -> tuple[list[int], list[int]]:
    """Per candidate: how many of the ``phrases`` (every class's concepts) it cites (in Z*, outside Z*)."""
    pool = list(phrases)
    splits = [split_by_zstar(citer(t, pool), selected) for t in candidates]
    return (
        [len({normalize(c) for c in inside}) for inside, _ in splits],
        [len({normalize(c) for c in outside}) for _, outside in splits],
    )


def penalized(
    scores: Sequence[float],
    outside: Sequence[int],
    penalty: float,
    inside: Sequence[int] | None = None,
    bonus: float = 0.0,
) -> list[float]:
    """``score - penalty * outside + bonus * inside`` per candidate (the module docstring's score')."""
    ins = inside if inside is not None else [0] * len(outside)
    return [float(s) - penalty * n + bonus * m for s, n, m in zip(scores, outside, ins, strict=True)]
