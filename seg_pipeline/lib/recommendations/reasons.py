"""Reasons: the purchased item that best explains each recommendation.

For ALS the explanation is the customer's purchased item whose factor vector is closest (cosine) to
the recommended item's, a cheap stand-in for implicit's per-user ``explain`` that runs in batches.
For item-KNN it is the purchased item with the largest item-item similarity, which is exactly
the term that contributed most to the score.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.parallel import each_in_threads


class Reason(IntEnum):
    """Why an item is on a list. Lists carry the code (one byte per row); ``decode_sql`` turns it
    into the sentence the customer reads when the lists are written."""

    BECAUSE = 0  # the purchased or viewed item that drove the score
    SIMILAR = 1  # content-similar to an item of the customer's history
    POPULAR = 2  # popular in the shop
    SEGMENT = 3  # popular in the customer's segment (cold start)
    NEW = 4  # a new item whose text resembles an item of the customer's history (new_items.py)

    @classmethod
    def named(cls, name: str) -> Reason:
        """The code of a model's ``reason`` attribute ("because", "similar", ...)."""
        return cls[name.upper()]

    @staticmethod
    def decode_sql(code: str, bought: str, title: str, segment_name: str) -> str:
        """A SQL expression giving the reason text of the code in column ``code``; ``bought``
        says whether the customer bought (rather than only looked at) the item titled ``title``."""
        r = {member.name: int(member) for member in Reason}
        return f"""case
                when {code} = {r["BECAUSE"]} and {bought} then 'Because you bought ' || {title}
                when {code} = {r["BECAUSE"]} then 'Because you looked at ' || {title}
                when {code} = {r["SIMILAR"]} and {bought}
                    then 'Similar to ' || {title} || ', which you bought'
                when {code} = {r["SIMILAR"]}
                    then 'Similar to ' || {title} || ', which you looked at'
                when {code} = {r["NEW"]} and {bought}
                    then 'New in the shop, like ' || {title} || ', which you bought'
                when {code} = {r["NEW"]}
                    then 'New in the shop, like ' || {title} || ', which you looked at'
                when {code} = {r["SEGMENT"]} then 'Popular in your segment: ' || {segment_name}
                else 'Popular in the shop right now'
            end"""


def top_per_row(matrix: sp.csr_matrix, n: int):
    """Each row's ``n`` largest entries, largest first (ties: lower column first), in one sort.

    Returns the row, column, value and rank (0 = largest) of every kept entry, rows in order;
    no per-row Python loop.
    """
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    # lexsort is stable: with each row's columns already in order, two keys give the same order
    # as three, at a fraction of the cost (the padding of histories in explain_by_vectors sorts
    # every entry).
    keys = (
        (-matrix.data, rows) if matrix.has_sorted_indices else (matrix.indices, -matrix.data, rows)
    )
    order = np.lexsort(keys)
    rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], counts)
    kept = rank < n
    best = order[kept]
    return rows[kept], matrix.indices[best], matrix.data[best], rank[kept]


def _padded_history(history: sp.csr_matrix, max_items: int) -> np.ndarray:
    """Dense (users × width) history columns, -1 padded, highest weight first.

    ``width`` is the longest history in the batch, capped at ``max_items``; longer histories
    keep their highest-weight items.
    """
    history = history.tocsr()
    n = history.shape[0]
    width = int(min(max_items, np.diff(history.indptr).max())) if n else 0
    out = np.full((n, max(width, 1)), -1, dtype=np.int64)
    rows, cols, _, rank = top_per_row(history, width)
    out[rows, rank] = cols
    return out


def explain_by_vectors(
    recs: np.ndarray,
    history: sp.csr_matrix,
    item_vectors: np.ndarray,
    *,
    max_history: int = 50,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """For each recommendation, the history item with the most similar vector, and that cosine.

    Returns arrays shaped like ``recs``: the explaining item's column (-1 when the user has no
    history or the slot is empty) and its cosine similarity.
    """
    norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
    unit = item_vectors / np.where(norms == 0, 1, norms)
    unit = unit.astype(np.float32)
    because = np.full(recs.shape, -1, dtype=np.int64)
    sims = np.zeros(recs.shape, dtype=np.float32)
    history = history.tocsr()
    # Users in order of history length, so that a batch pads each history to about its own
    # length rather than to the batch's longest (often five times the mean on real shops). A
    # user's result does not depend on the batch.
    order = np.argsort(np.minimum(np.diff(history.indptr), max_history), kind="stable")

    def one_batch(start: int) -> None:
        users = order[start : start + batch_size]
        r = recs[users]
        hist = _padded_history(history[users], max_history)
        # np.take, not unit[...]: much faster for this gather of whole rows.
        rv = np.take(unit, np.clip(r, 0, None), axis=0)
        hv = np.take(unit, np.clip(hist, 0, None), axis=0)
        s = np.matmul(rv, hv.transpose(0, 2, 1))  # batched (k × f) @ (f × l)
        s[np.broadcast_to((hist < 0)[:, None, :], s.shape)] = -np.inf
        best = s.argmax(axis=2)
        best_sim = np.take_along_axis(s, best[..., None], axis=2)[..., 0]
        chosen = np.take_along_axis(hist, best, axis=1)
        ok = np.isfinite(best_sim) & (r >= 0)
        because[users] = np.where(ok, chosen, -1)
        sims[users] = np.where(ok, best_sim, 0)

    each_in_threads(one_batch, range(0, recs.shape[0], batch_size))
    return because, sims


def explain_by_similarity(
    recs: np.ndarray,
    history: sp.csr_matrix,
    similarity: sp.csr_matrix,
    *,
    batch_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """For each recommendation, the history item with the largest item-item similarity.

    ``similarity[target, source]`` is how much having ``source`` supports recommending
    ``target``. Returns arrays shaped like ``recs``; -1 where no history item is a neighbour.
    Runs in batches of users so memory stays bounded by the batch, not the customer count.
    """
    similarity = similarity.tocsr()
    history = history.tocsr()
    because = np.full(recs.shape, -1, dtype=np.int64)
    sims = np.zeros(recs.shape, dtype=np.float32)
    n = recs.shape[1]
    for start in range(0, recs.shape[0], batch_size):
        block = recs[start : start + batch_size]
        flat = block.ravel()
        rows = similarity[np.clip(flat, 0, None)]
        owner = np.repeat(np.arange(len(block)), n)
        masked = rows.multiply(history[start : start + len(block)][owner]).tocsr()
        masked.eliminate_zeros()
        best = np.asarray(masked.argmax(axis=1)).ravel()
        best_val = np.asarray(masked.max(axis=1).todense()).ravel()
        found = (best_val > 0) & (flat >= 0)
        because[start : start + len(block)] = np.where(found, best, -1).reshape(block.shape)
        sims[start : start + len(block)] = np.where(found, best_val, 0).reshape(block.shape)
    return because, sims
