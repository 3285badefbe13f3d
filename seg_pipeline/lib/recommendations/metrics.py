"""Ranking metrics at k, written out so that each definition is explicit and tested by hand.

All accuracy metrics are averaged over the users that have at least one relevant (held-out) item;
relevance is binary. Precision divides by k (not by min(k, |relevant|) as implicit's
``ranking_metrics_at_k`` does, which makes its "precision" behave like recall).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def evaluated_users(
    relevant: sp.csr_matrix, max_users: int | None, random_state: int
) -> np.ndarray:
    """The users with a held-out item, sampled to ``max_users`` with a fixed seed: the
    candidates' evaluation and the champion's diversity trials score the same customers."""
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(random_state).choice(users, max_users, replace=False))
    return users


def item_popularity(weights: sp.spmatrix) -> np.ndarray:
    """Each item's share of the users who interacted with it (the novelty metric's basis)."""
    return np.asarray((weights > 0).sum(axis=0)).ravel() / max(weights.shape[0], 1)


def _hits(recs: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean matrix: ``hits[u, r]`` is True when user ``u``'s rank-``r`` item is relevant."""
    n_items = relevant.shape[1]
    rel = relevant.tocoo()
    rel_keys = np.sort(rel.row.astype(np.int64) * n_items + rel.col)
    users = np.repeat(np.arange(recs.shape[0], dtype=np.int64), recs.shape[1]).reshape(recs.shape)
    keys = users * n_items + recs
    found = np.isin(keys, rel_keys)
    return found & (recs >= 0)


def ranking_metrics(recs: np.ndarray, relevant: sp.csr_matrix, k: int) -> dict[str, float]:
    """Precision, recall, F1, NDCG, MAP and hit rate at ``k``, and MRR, averaged over users.

    Parameters
    ----------
    recs : ndarray of shape (n_users, >= k)
        Recommended item columns per user, best first; -1 marks an empty slot.
    relevant : csr_matrix of shape (n_users, n_items)
        Non-zero where the item is relevant to the user.
    k : int

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``ndcg``, ``map``, ``hit_rate``, ``mrr`` and
        ``n_users`` (users with at least one relevant item).
    """
    recs = np.asarray(recs)[:, :k]
    relevant = relevant.tocsr()
    n_rel = np.diff(relevant.indptr)
    users = np.flatnonzero(n_rel > 0)
    if len(users) == 0:
        return {
            m: float("nan") for m in ("precision", "recall", "f1", "ndcg", "map", "hit_rate", "mrr")
        } | {"n_users": 0}
    hits = _hits(recs[users], relevant[users]).astype(float)
    n_rel = n_rel[users].astype(float)
    n_hits = hits.sum(axis=1)
    precision = n_hits / k
    recall = n_hits / n_rel
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(n_hits > 0, 2 * precision * recall / (precision + recall), 0.0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.array([discounts[: int(min(k, r))].sum() for r in n_rel])
    ndcg = dcg / ideal
    cum_hits = np.cumsum(hits, axis=1)
    precision_at_i = cum_hits / np.arange(1, k + 1)
    ap = (precision_at_i * hits).sum(axis=1) / np.minimum(k, n_rel)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "ndcg": float(ndcg.mean()),
        "map": float(ap.mean()),
        "hit_rate": float((n_hits > 0).mean()),
        "mrr": float((1.0 / first).mean()),
        "n_users": int(len(users)),
    }


def beyond_accuracy(
    recs: np.ndarray, item_categories: np.ndarray, item_popularity: np.ndarray, k: int
) -> dict[str, float]:
    """Catalogue coverage, intra-list diversity by category, and novelty.

    Coverage is the share of the catalogue recommended to anyone. Diversity is the share of item
    pairs within a list that are from different categories. Novelty is the mean self-information
    ``-log2(p)`` of recommended items, with ``p`` the share of users who interacted with the item.
    """
    recs = np.asarray(recs)[:, :k]
    valid = recs >= 0
    n_items = len(item_categories)
    coverage = len(np.unique(recs[valid])) / n_items if n_items else float("nan")
    cats = np.where(valid, item_categories[np.clip(recs, 0, None)], -1)
    same = 0.0
    pairs = 0.0
    for a in range(k):
        for b in range(a + 1, k):
            both = valid[:, a] & valid[:, b]
            same += float((both & (cats[:, a] == cats[:, b])).sum())
            pairs += float(both.sum())
    diversity = 1 - same / pairs if pairs else float("nan")
    p = np.clip(item_popularity, 1e-12, None)
    novelty = float(-np.log2(p[recs[valid]]).mean()) if valid.any() else float("nan")
    return {"coverage": coverage, "diversity": diversity, "novelty": novelty}
