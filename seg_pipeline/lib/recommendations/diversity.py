"""Diversity on purpose: maximal marginal relevance (MMR) re-ranking of each list.

A champion chosen on NDCG fills a list with near-duplicates of one taste (five mugs of the same
range). MMR (Carbonell & Goldstein 1998) builds the list greedily: each next item maximises
``(1 - strength) * relevance - strength * (its largest similarity to an item already listed)``,
with relevance the champion's score scaled to [0, 1] over the user's candidates. Strength 0 is the
champion's own list.

Similarity is the cosine of item vectors: a factor model's own item factors, otherwise a
truncated SVD of the items × customers purchase matrix, so "diverse" means "bought by different
people". Intra-list diversity (ILD) is one minus the mean pairwise cosine of a
list's items in that space.

The strength is chosen on the validation window (``choose_strength``): the largest of
``STRENGTHS`` whose NDCG is within ``max_ndcg_cost`` (2% by default) of strength 0, so more
diverse lists cost at most that much measured accuracy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from seg_pipeline.lib.recommendations.metrics import (
    beyond_accuracy,
    evaluated_users,
    item_popularity,
    ranking_metrics,
)
from seg_pipeline.lib.recommendations.topk import cap_applies

STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.5)
# Candidates MMR chooses from: the champion's top 2n (3n bought no better trade-off on either
# benchmark shop's validation window); under a category cap, 4n, as the cap itself uses.
POOL_FACTOR = 2


def similarity_vectors(model, purchased: sp.csr_matrix) -> np.ndarray:
    """The unit item vectors MMR compares items with: a factor model's own item factors (fixed
    between refits, so a kept model's lists re-score exactly), else ``item_vectors``."""
    factors = getattr(model, "item_vectors", None)
    if factors is None or not isinstance(factors, np.ndarray):
        return item_vectors(purchased)
    factors = np.asarray(factors, dtype=np.float32)
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return np.divide(factors, norms, out=np.zeros_like(factors), where=norms > 0)


def item_vectors(purchased: sp.csr_matrix, dims: int = 32, random_state: int = 0) -> np.ndarray:
    """Unit item vectors (items × ``dims``) from a truncated SVD of the binary purchase matrix;
    items nobody bought get a zero vector (similar to nothing)."""
    binary = (purchased.T.tocsr() > 0).astype(np.float32)
    dims = max(1, min(dims, min(binary.shape) - 1))
    if binary.nnz == 0 or min(binary.shape) < 2:
        return np.zeros((binary.shape[0], 1), dtype=np.float32)
    u, s, _ = randomized_svd(binary, dims, n_iter=3, random_state=random_state)
    vectors = (u * s).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def mmr_rerank(
    items: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray,
    n: int,
    strength: float,
    *,
    categories: np.ndarray | None = None,
    max_per_category: int | None = None,
    batch_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each row's candidates (best first, -1 padded) into ``n`` slots by MMR.

    Returns the chosen items and their original scores (-1 and -inf pad a short list). At most
    ``max_per_category`` items of one category are chosen when given.
    """
    out_items = np.full((len(items), n), -1, dtype=np.int64)
    out_scores = np.full((len(items), n), -np.inf, dtype=np.float32)
    for start in range(0, len(items), batch_size):
        rows = slice(start, start + batch_size)
        out_items[rows], out_scores[rows] = _mmr_batch(
            items[rows], scores[rows], vectors, n, strength, categories, max_per_category
        )
    return out_items, out_scores


def _mmr_batch(items, scores, vectors, n, strength, categories, max_per_category):
    b, p = items.shape
    valid = (items >= 0) & np.isfinite(scores)
    safe = np.where(valid, items, 0)
    finite = np.where(valid, scores, np.nan)
    low, high = (
        np.nanmin(finite, axis=1, initial=np.inf),
        np.nanmax(finite, axis=1, initial=-np.inf),
    )
    span = np.where(high > low, high - low, 1.0)
    relevance = np.where(valid, (np.nan_to_num(finite) - low[:, None]) / span[:, None], 0.0)
    v = vectors[safe]
    gain = ((1 - strength) * relevance).astype(np.float32)
    nearest = np.zeros((b, p), dtype=np.float32)
    # 0 where a candidate may still be chosen, -inf once it is taken or barred by the cap.
    closed = np.where(valid, 0, -np.inf).astype(np.float32)
    capped = max_per_category is not None and categories is not None
    cats = categories[safe] if capped else None
    counted = cats >= 0 if capped else None
    cat_count = np.zeros((b, p), dtype=np.int32)
    picked_items = np.full((b, n), -1, dtype=np.int64)
    picked_scores = np.full((b, n), -np.inf, dtype=np.float32)
    everyone = np.arange(b)
    value = np.empty((b, p), dtype=np.float32)
    for slot in range(min(n, p)):
        np.multiply(nearest, -strength, out=value)
        value += gain
        value += closed
        pick = np.argmax(value, axis=1)
        ok = np.isfinite(value[everyone, pick])
        picked_items[ok, slot] = items[everyone, pick][ok]
        picked_scores[ok, slot] = scores[everyone, pick][ok]
        closed[everyone, pick] = -np.inf
        # A row with nothing left to choose keeps nothing open: updating it changes nothing.
        # Only the cosines to the item just listed are needed: one batched matrix-vector
        # product per slot instead of every candidate pair.
        cosines = np.matmul(v, v[everyone, pick][:, :, None])[:, :, 0]
        np.maximum(nearest, cosines, out=nearest)
        if capped:
            cat_count += (cats == cats[everyone, pick][:, None]) & counted
            np.copyto(closed, -np.inf, where=cat_count >= max_per_category)
    # A list cut short by the cap keeps its chosen items first; later slots stay padding.
    order = np.argsort(picked_items < 0, axis=1, kind="stable")
    return np.take_along_axis(picked_items, order, 1), np.take_along_axis(picked_scores, order, 1)


def intra_list_diversity(recs: np.ndarray, vectors: np.ndarray) -> float:
    """One minus the mean pairwise cosine of the items within each list, over lists with two or
    more items."""
    valid = recs >= 0
    v = vectors[np.where(valid, recs, 0)] * valid[..., None]
    gram = np.matmul(v, v.transpose(0, 2, 1))
    counts = valid.sum(axis=1)
    pairs = counts * (counts - 1)
    off_diagonal = gram.sum(axis=(1, 2)) - np.einsum("bpp->b", gram)
    ok = pairs > 0
    if not ok.any():
        return float("nan")
    return float(1 - (off_diagonal[ok] / pairs[ok]).mean())


def diversity_trials(
    model,
    exclude: sp.csr_matrix,
    relevant: sp.csr_matrix,
    users: np.ndarray,
    vectors: np.ndarray,
    k: int,
    *,
    blocked: np.ndarray | None = None,
    categories: np.ndarray | None = None,
    popularity: np.ndarray | None = None,
    max_per_category: int | None = None,
    strengths=STRENGTHS,
) -> pd.DataFrame:
    """NDCG and beyond-accuracy figures of ``model``'s lists (fitted before the split) at each
    MMR strength, on the validation window, from the same pool and under the same category cap
    as the nightly lists (``lists.build_lists``): one row per strength."""
    capped = cap_applies(categories, max_per_category)
    pool = model.recommend(
        users, exclude, k * max(POOL_FACTOR, 4 if capped else 0), blocked=blocked
    )
    pool.items[~np.isfinite(pool.scores)] = -1
    cap = {"categories": categories, "max_per_category": max_per_category} if capped else {}
    categories = categories if categories is not None else np.zeros(exclude.shape[1], int)
    popularity = popularity if popularity is not None else np.ones(exclude.shape[1])
    rows = []
    for strength in strengths:
        recs = mmr_rerank(pool.items, pool.scores, vectors, k, strength, **cap)[0]
        rows.append(
            {
                "strength": strength,
                **ranking_metrics(recs, relevant[users], k),
                **beyond_accuracy(recs, categories, popularity, k),
                "ild": intra_list_diversity(recs, vectors),
            }
        )
    return pd.DataFrame(rows)


def validation_trials(
    model,
    train,
    relevant: sp.csr_matrix,
    k: int,
    *,
    blocked: np.ndarray | None,
    max_per_category: int | None,
    max_users: int,
    random_state: int,
) -> pd.DataFrame:
    """``diversity_trials`` of ``model`` (fitted on ``train``, an ``InteractionMatrix`` of the
    days before the split) on the customers the candidates' evaluation scored
    (``metrics.evaluated_users``)."""
    return diversity_trials(
        model,
        train.purchased,
        relevant,
        evaluated_users(relevant, max_users, random_state),
        similarity_vectors(model, train.purchased),
        k,
        blocked=blocked,
        categories=train.item_categories,
        popularity=item_popularity(train.weights),
        max_per_category=max_per_category,
    )


def choose_strength(trials: pd.DataFrame, max_ndcg_cost: float) -> float:
    """The largest strength whose NDCG is at least ``1 - max_ndcg_cost`` times strength 0's."""
    if trials.empty:
        return 0.0
    plain = float(trials.loc[trials["strength"] == 0, "ndcg"].iloc[0])
    fine = trials[trials["ndcg"] >= (1 - max_ndcg_cost) * plain]
    return float(fine["strength"].max()) if len(fine) else 0.0
