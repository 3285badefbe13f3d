"""Turn a fitted champion into lists: business rules, cold start and reasons, as arrays."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.diversity import POOL_FACTOR, mmr_rerank
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.new_items import NewItems
from seg_pipeline.lib.recommendations.popularity import SegmentPopularityRecommender
from seg_pipeline.lib.recommendations.reasons import Reason
from seg_pipeline.lib.recommendations.topk import Recommendations, cap_applies

# Cold-start lists count purchases of the last 90 days: what a segment buys now.
COLD_WINDOW_DAYS = 90


@dataclass
class Lists:
    """Long-form lists: row ``k`` recommends column ``items[k]`` to user ``users[k]``."""

    users: np.ndarray
    ranks: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    because: np.ndarray
    reason: np.ndarray
    source: np.ndarray  # 0 = champion, 1 = cold-start popularity
    bought: np.ndarray  # the user bought ``because`` (rather than only looked at it)


def exclusion_mask(data: InteractionMatrix, repeatable: np.ndarray | None) -> sp.csr_matrix:
    """Purchased items, except those the configuration marks repeatable."""
    mask = data.purchased.tocsr().copy()
    if repeatable is not None and len(repeatable):
        keep = np.ones(mask.shape[1], dtype=np.float32)
        keep[repeatable] = 0
        mask = mask @ sp.diags(keep)
        mask.eliminate_zeros()
    return mask.tocsr()


def has_bought(purchased: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``purchased[users[j], items[j]] > 0`` for every j (False where ``items[j] < 0``).

    scipy's element lookup searches each pair's row in C and densifies nothing, which beat a
    binary search over (row, column) keys built in numpy.
    """
    items = np.asarray(items)
    if len(items) == 0:
        return np.zeros(0, dtype=bool)
    found = np.asarray(purchased.tocsr()[users, np.clip(items, 0, None)]).ravel() > 0
    return found & (items >= 0)


def _segments_or_none(data: InteractionMatrix) -> np.ndarray:
    if data.user_segments is not None:
        return data.user_segments
    return np.full(data.shape[0], -1, dtype=np.int64)


def build_lists(
    champion: Recommender,
    data: InteractionMatrix,
    n: int,
    *,
    blocked: np.ndarray | None = None,
    repeatable: np.ndarray | None = None,
    max_per_category: int | None = None,
    cold_window_days: int | None = COLD_WINDOW_DAYS,
    fallback: SegmentPopularityRecommender | None = None,
    item_support: np.ndarray | None = None,
    diversity: float = 0.0,
    similarity_vectors: np.ndarray | None = None,
    demoted: sp.csr_matrix | None = None,
    new_items: NewItems | None = None,
) -> Lists:
    """Recommend ``n`` items to every user of ``data`` with a fitted ``champion``.

    Customers who never bought anything take the cold-start path: the popular items of their
    segment, or of the whole shop when they have none. An item nobody interacted with can still
    appear through the champion's content similarity; its reason then says "Similar to".

    When ``data`` holds only some customers (those re-scored tonight), pass ``fallback`` fitted on
    everyone and ``item_support``, the interactions per item the champion learnt from, so that
    popularity and the "nobody interacted with it" test do not depend on who is in ``data``.

    ``diversity`` > 0 re-ranks the champion's top ``POOL_FACTOR × n`` by maximal marginal
    relevance over ``similarity_vectors`` (diversity.py), with the category cap applied as it
    chooses. ``demoted`` (users × items, as ``data``) marks items shown to the customer without
    any interaction (feedback.py); they are left out like purchased ones. ``new_items`` gives the
    last slot of a list to a new item that reads like the customer's history (new_items.py).
    """
    exclude = exclusion_mask(data, repeatable)
    if demoted is not None and demoted.nnz:
        exclude = ((exclude + demoted) > 0).astype(np.float32).tocsr()
    bought = np.diff(data.purchased.indptr) > 0
    warm, cold = np.flatnonzero(bought), np.flatnonzero(~bought)
    kwargs = {
        "blocked": blocked,
        "categories": data.item_categories,
        "max_per_category": max_per_category,
    }
    parts = []
    if len(warm):
        if diversity > 0 and similarity_vectors is not None:

            def rerank(pool_items, pool_scores):
                return mmr_rerank(
                    pool_items,
                    pool_scores,
                    similarity_vectors,
                    n,
                    diversity,
                    categories=data.item_categories,
                    max_per_category=max_per_category if capped else None,
                )

            # Under a category cap MMR chooses from as many candidates as the cap itself would
            # (recommend's 4n), so a list is seldom cut short.
            capped = cap_applies(data.item_categories, max_per_category)
            pool = n * max(POOL_FACTOR, 4 if capped else 0)
            recs = champion.recommend(warm, exclude, n, blocked=blocked, rerank=rerank, pool=pool)
            items, scores = recs.items, recs.scores
            # A pool the category cap cuts short: those customers get the capped list the
            # champion would give without re-ranking (it looks further down).
            short = np.flatnonzero((items < 0).any(axis=1))
            if len(short):
                fill = champion.recommend(warm[short], exclude, n, **kwargs)
                longer = (fill.items >= 0).sum(axis=1) > (items[short] >= 0).sum(axis=1)
                items[short[longer]], scores[short[longer]] = (
                    fill.items[longer],
                    fill.scores[longer],
                )
            recs = Recommendations(items=items, scores=scores)
        else:
            recs = champion.recommend(warm, exclude, n, **kwargs)
        because = champion.explain(recs.items, data.weights[warm])
        reason = np.full(recs.items.shape, Reason.named(champion.reason))
        if champion.reason == "because":
            if item_support is None:
                item_support = np.bincount(data.weights.indices, minlength=data.shape[1])
            no_interactions = np.asarray(item_support) == 0
            cold_item = no_interactions[np.clip(recs.items, 0, None)] & (because >= 0)
            reason = np.where(cold_item, Reason.SIMILAR, reason)
            reason = np.where(because < 0, Reason.POPULAR, reason)
        if new_items is not None:
            because = np.array(because, dtype=np.int64)
            reason = np.array(reason)
            new_items.place(
                recs.items,
                recs.scores,
                because,
                reason,
                data.weights[warm],
                exclude[warm],
                categories=data.item_categories,
                max_per_category=(
                    max_per_category
                    if cap_applies(data.item_categories, max_per_category)
                    else None
                ),
            )
        parts.append((warm, recs, because, reason, 0))
    if len(cold):
        if fallback is None:
            fallback = SegmentPopularityRecommender(window_days=cold_window_days).fit(data)
        else:
            fallback = replace(fallback, segments_=_segments_or_none(data))
        recs = fallback.recommend(cold, exclude, n, **kwargs)
        segments = _segments_or_none(data)[cold]
        reason = np.where(segments[:, None] >= 0, Reason.SEGMENT, Reason.POPULAR)
        reason = np.broadcast_to(reason, recs.items.shape)
        parts.append((cold, recs, np.full(recs.items.shape, -1), reason, 1))
    # Filled in place, in the narrowest types that hold the values, instead of appending int64
    # parts and concatenating them.
    valid = [recs.items >= 0 for _, recs, *_ in parts]
    total = int(sum(v.sum() for v in valid))
    dtypes = {"users": np.int32, "ranks": np.int32, "items": np.int32, "scores": np.float64}
    dtypes |= {"because": np.int32, "reason": np.int8, "source": np.int8}
    columns = {key: np.empty(total, dtype=dtype) for key, dtype in dtypes.items()}
    start = 0
    for (users, recs, because, reason, source), ok in zip(parts, valid, strict=True):
        end = start + int(ok.sum())
        rows = slice(start, end)
        columns["users"][rows] = np.broadcast_to(users[:, None], ok.shape)[ok]
        columns["ranks"][rows] = np.cumsum(ok, axis=1)[ok]
        columns["items"][rows] = recs.items[ok]
        columns["scores"][rows] = recs.scores[ok]
        columns["because"][rows] = because[ok]
        columns["reason"][rows] = np.asarray(reason)[ok]
        columns["source"][rows] = source
        start = end
    bought = has_bought(data.purchased, columns["users"], columns["because"])
    return Lists(**columns, bought=bought)
