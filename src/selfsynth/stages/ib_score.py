"""Information-bottleneck concept selection: score each class concept against an image's descriptions.

For image k with descriptions d_1..d_m and a candidate concept z (method.md step 3)::

    s(z) = sum_i log( e^{d_i.z/tau} / (e^{d_i.z/tau} + sum_{n in N_k} e^{z.n/tau}) )

where N_k are the descriptions of every OTHER image. The negative sum depends on k only through
the image's own descriptions, so it is computed once per concept over ALL descriptions (a
streamed log-sum-exp, chunked so memory stays bounded) and the image's own terms are then taken
out in log space: log(e^L - e^B) = L + log1p(-e^{B-L}). That is linear in the number of images;
re-concatenating the other images for every image (the reference scripts) is quadratic.

The subtraction loses precision when the image's own terms make up most of the total
(e^{B-L} close to 1); those (image, concept) pairs are recomputed directly over the other
images' descriptions, so the result stays within float32 rounding of the formula everywhere.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from selfsynth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Above this share of the total held by an image's own terms, log1p(-share) loses digits:
# recompute the negative sum directly. At 0.5 the subtraction costs at most ~1 bit.
_DIRECT_ABOVE = -0.6931  # log(0.5)
# Elements per (concepts x descriptions) block of dot products: 2**24 float32 = 64 MB.
_BLOCK = 1 << 24


def _as_list(desc_emb: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(desc_emb, np.ndarray):
        if desc_emb.ndim != 3:
            raise DataError(f"desc_emb must have shape (images, descriptions, dim), got {desc_emb.shape}")
        return list(desc_emb.astype(np.float32, copy=False))
    out = [np.asarray(d, dtype=np.float32) for d in desc_emb]
    for i, d in enumerate(out):
        if d.ndim != 2:
            raise DataError(f"descriptions of image {i} must have shape (m, dim), got {d.shape}")
    return out


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x), exact for very negative x (where 1 + e^x rounds to 1)."""
    return np.logaddexp(np.float32(0.0), x)


def _logsumexp_all(z: np.ndarray, descs: np.ndarray, tau: float, progress: bool) -> np.ndarray:
    """log sum_n e^{z_j.n/tau} over every description n, for each row z_j; streamed by blocks."""
    n_c = z.shape[0]
    run_max = np.full(n_c, -np.inf, dtype=np.float32)
    run_sum = np.zeros(n_c, dtype=np.float32)
    rows = max(1, _BLOCK // max(1, n_c))
    starts = range(0, descs.shape[0], rows)
    for s in tqdm(starts, desc="negatives", unit="block", disable=not progress):
        logits = z @ descs[s : s + rows].T
        logits *= np.float32(1.0 / tau)
        block_max = logits.max(axis=1)
        new_max = np.maximum(run_max, block_max)
        logits -= new_max[:, None]
        np.exp(logits, out=logits)
        run_sum = run_sum * np.exp(run_max - new_max) + logits.sum(axis=1)
        run_max = new_max
    with np.errstate(divide="ignore"):
        return (run_max + np.log(run_sum)).astype(np.float32)


def _score_group(
    own_descs: list[np.ndarray],
    z: np.ndarray,
    lse_all: np.ndarray,
    tau: float,
    all_descs: np.ndarray,
    spans: list[tuple[int, int]],
) -> tuple[np.ndarray, int]:
    """Scores (g, c) for g images with the same m descriptions and the same c candidates ``z``."""
    own = np.stack(own_descs)  # (g, m, d)
    logits = own @ z.T  # (g, m, c): d_i.z_j
    logits *= np.float32(1.0 / tau)
    own_max = logits.max(axis=1)
    lse_own = own_max + np.log(np.exp(logits - own_max[:, None, :]).sum(axis=1))  # (g, c)
    gap = np.minimum(lse_own - lse_all[None, :], 0.0)  # <= 0 up to rounding
    with np.errstate(divide="ignore"):
        lse_neg = lse_all[None, :] + np.log1p(-np.exp(gap))
    bad = gap > _DIRECT_ABOVE
    for g in np.flatnonzero(bad.any(axis=1)):  # own terms dominate: sum the other images directly
        cols = np.flatnonzero(bad[g])
        start, stop = spans[g]
        before = _logsumexp_all(z[cols], all_descs[:start], tau, progress=False)
        after = _logsumexp_all(z[cols], all_descs[stop:], tau, progress=False)
        lse_neg[g, cols] = np.logaddexp(before, after)
    # log(e^a / (e^a + e^neg)) = -softplus(neg - a): exact even when the term is ~0, and 0 when
    # there are no other images (neg = -inf).
    terms = -_softplus(lse_neg[:, None, :] - logits)
    return terms.sum(axis=1, dtype=np.float32), int(bad.sum())


def ib_scores(
    desc_emb: np.ndarray | Sequence[np.ndarray],
    concept_emb: np.ndarray,
    candidates: Sequence[Sequence[int]],
    tau: float,
    *,
    progress: bool = False,
) -> list[np.ndarray]:
    """Per image, the IB score of each of its candidate concepts, in the candidates' order.

    ``desc_emb`` is (images, m, d) or a list of (m_k, d) arrays (images with fewer descriptions);
    ``concept_emb`` is (C, d); ``candidates[k]`` holds indices into ``concept_emb`` (usually the
    concepts of image k's class). All embeddings are expected L2-normalised. float32 throughout.
    """
    if tau <= 0:
        raise ConfigError(f"select.tau must be > 0, got {tau}")
    descs_per_image = _as_list(desc_emb)
    concept_emb = np.asarray(concept_emb, dtype=np.float32)
    if concept_emb.ndim != 2:
        raise DataError(f"concept_emb must have shape (concepts, dim), got {concept_emb.shape}")
    if len(candidates) != len(descs_per_image):
        raise DataError(f"candidates has {len(candidates)} entries for {len(descs_per_image)} images")
    n_concepts, dim = concept_emb.shape
    for i, d in enumerate(descs_per_image):
        if d.shape[1] != dim:
            raise DataError(f"descriptions of image {i} have dim {d.shape[1]}, concepts have dim {dim}")
    cands = [np.asarray(c, dtype=np.int64).reshape(-1) for c in candidates]
    for i, c in enumerate(cands):
        if c.size and (c.min() < 0 or c.max() >= n_concepts):
            raise DataError(f"candidates of image {i} index outside the {n_concepts} concepts")

    counts = np.array([d.shape[0] for d in descs_per_image], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if isinstance(desc_emb, np.ndarray):  # one block already: a view, not a 6000 x 30 x d copy
        all_descs = np.ascontiguousarray(desc_emb, dtype=np.float32).reshape(-1, dim)
    elif descs_per_image:
        all_descs = np.concatenate(descs_per_image)
    else:
        all_descs = np.zeros((0, dim), np.float32)

    used = np.unique(np.concatenate(cands)) if cands else np.zeros(0, np.int64)
    lse_all = np.full(n_concepts, -np.inf, dtype=np.float32)
    if used.size and all_descs.shape[0]:
        lse_all[used] = _logsumexp_all(concept_emb[used], all_descs, tau, progress)

    # Images sharing a candidate list and a description count are scored as one batch.
    groups: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
    for i, c in enumerate(cands):
        groups[(tuple(c.tolist()), int(counts[i]))].append(i)

    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(cands)
    n_direct = 0
    for (cand, m), members in groups.items():
        if not cand or m == 0:  # nothing to score, or no descriptions: every term is empty
            for i in members:
                out[i] = np.zeros(len(cand), np.float32)
            continue
        idx = np.asarray(cand, dtype=np.int64)
        per_chunk = max(1, _BLOCK // (m * (dim + len(cand))))
        for s in range(0, len(members), per_chunk):
            chunk = members[s : s + per_chunk]
            scores, direct = _score_group(
                [descs_per_image[i] for i in chunk],
                concept_emb[idx],
                lse_all[idx],
                tau,
                all_descs,
                [(int(offsets[i]), int(offsets[i + 1])) for i in chunk],
            )
            n_direct += direct
            for g, i in enumerate(chunk):
                out[i] = scores[g]
    if n_direct:
        log.debug(
            "ib_scores: %d (image, concept) pairs summed directly (own descriptions dominate)", n_direct
        )
    return out


def select(scores: Sequence[float] | np.ndarray, k: float, min_keep: int) -> list[int]:
    """Positions of the kept candidates, best first: s > mean + k * std, at least ``min_keep``.

    std is the population std over this image's candidates. Ties keep candidate order, so the
    same scores always give the same selection.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return []
    if np.isnan(s).any():
        raise DataError("concept scores contain NaN: check the embeddings for zero vectors")
    order = np.argsort(-s, kind="stable")
    threshold = s.mean() + k * s.std()
    kept = [int(p) for p in order if s[p] > threshold]
    if len(kept) < min_keep:
        kept = [int(p) for p in order[: min(min_keep, s.size)]]
    return kept


def select_concepts(
    desc_emb: np.ndarray | Sequence[np.ndarray],
    concept_emb: np.ndarray,
    candidates: Sequence[Sequence[int]],
    *,
    tau: float = 0.1,
    k: float = 0.4,
    min_keep: int = 3,
    progress: bool = False,
) -> tuple[list[list[int]], list[np.ndarray]]:
    """Z* for every image: (positions into its candidate list, best first; all its candidates' scores)."""
    scores = ib_scores(desc_emb, concept_emb, candidates, tau, progress=progress)
    return [select(s, k, min_keep) for s in scores], scores
