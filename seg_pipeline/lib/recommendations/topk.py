"""Top-k selection shared by every recommender: partial sorts, the purchased mask and the
category cap, batched so memory stays bounded by ``batch × n_items``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Recommendations:
    """Top-N per user: ``items[u, r]`` is the column of user ``u``'s rank ``r + 1`` item."""

    items: np.ndarray
    scores: np.ndarray


_BLOCK = 64


def largest(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of each row's ``k`` largest values, ascending; ties keep the lower position.

    One ``np.partition`` finds each row's k-th largest value and a comparison marks the entries
    at or above it: on 875k × 661 pooled scores (k = 40) that cost less than ``argpartition``,
    whose index bookkeeping was the largest part of scoring at 10M events. Rows where several
    entries tie with the k-th value (a customer with an all-zero factor vector, a row padded
    with -inf) are sorted instead, so the lower positions win the tie.
    """
    rows, m = values.shape
    if k >= m:
        return np.broadcast_to(np.arange(m), values.shape)
    kth = np.partition(values, m - k, axis=1)[:, m - k]
    mask = values >= kth[:, None]
    counts = np.count_nonzero(mask, axis=1)
    columns = np.nonzero(mask)[1]
    if (counts == k).all():
        return columns.reshape(rows, k)
    if len(columns) == 0:  # every value NaN
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    # Each row's marked columns start where the previous rows' end; a tied row has more.
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    top = columns[np.minimum(starts[:, None] + np.arange(k), max(len(columns) - 1, 0))]
    tied = np.flatnonzero(counts != k)
    top[tied] = np.argsort(-values[tied], axis=1, kind="stable")[:, :k]
    return top


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best columns of each row, best first (exact; ties keep the lower column).

    Selection runs on block maxima first: a row's ``n`` best entries lie in the ``n`` blocks of
    ``_BLOCK`` columns with the largest maxima, so only ``n × _BLOCK`` candidates per row are
    partitioned instead of every column: over tens of thousands of items far cheaper than
    ``argpartition`` on the whole row, which profiling found to be the slowest step at scale.
    """
    rows, m = scores.shape
    k = min(n, m)
    if k == 0:
        return np.empty((rows, 0), np.int64), np.empty((rows, 0), scores.dtype)
    if m <= 4 * k * _BLOCK:
        cols = np.broadcast_to(np.arange(m), scores.shape)
        cand = scores
    else:
        block_max = np.maximum.reduceat(scores, np.arange(0, m, _BLOCK), axis=1)
        blocks = largest(block_max, k)
        cols = (blocks[:, :, None] * _BLOCK + np.arange(_BLOCK)).reshape(rows, -1)
        inside = cols < m
        cols = np.minimum(cols, m - 1)
        cand = np.take_along_axis(scores, cols, axis=1)
        cand[~inside] = -np.inf
    # Candidates are in column order, so ties at the cut keep the lower column; sorting on
    # (-score, column) then orders ties the same way whatever the block layout.
    top = largest(cand, k)
    top_cols = np.take_along_axis(cols, top, axis=1)
    top_scores = np.take_along_axis(cand, top, axis=1)
    order = np.lexsort((top_cols, -top_scores), axis=1)
    return np.take_along_axis(top_cols, order, axis=1), np.take_along_axis(
        top_scores, order, axis=1
    )


def mask_purchased(scores: np.ndarray, exclude: sp.csr_matrix, position=None) -> None:
    """Set each row's excluded items to -inf in place.

    ``position`` maps item columns to score columns when only some items are scored (-1: the
    item has no column).
    """
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    cols = exclude.indices
    if position is not None:
        cols = position[cols]
        rows, cols = rows[cols >= 0], cols[cols >= 0]
    scores[rows, cols] = -np.inf


def cap_applies(categories: np.ndarray | None, max_per_category: int | None) -> bool:
    """Whether a category cap has anything to do: a cap, and items in more than one category (a
    catalogue in a single category, such as Online Retail's "uncategorised", is not capped)."""
    return (
        max_per_category is not None
        and categories is not None
        and len(categories) > 0
        and categories.max() > 0
    )


def cap_categories(top, top_scores, categories, cap: int, n: int):
    """Keep at most ``cap`` items per category in each row, in score order, up to ``n`` items.

    When the candidates cannot fill a list within the cap (a shop with two categories, say), the
    remaining slots take the best candidates regardless of category: a full list beats a short
    one. The result is re-sorted by score.
    """
    rows = np.arange(top.shape[0])
    n_cat = int(categories.max()) + 1
    counts = np.zeros((top.shape[0], n_cat), dtype=np.int32)
    taken = np.zeros(top.shape[0], dtype=np.int32)
    used = np.zeros(top.shape, dtype=bool)
    out = np.full((top.shape[0], n), -1, dtype=np.int64)
    out_scores = np.full((top.shape[0], n), -np.inf, dtype=np.float32)
    for capped in (True, False):
        for j in range(top.shape[1]):
            item = top[:, j]
            ok = np.isfinite(top_scores[:, j]) & (taken < n) & ~used[:, j]
            cat = categories[np.clip(item, 0, None)]
            if capped:
                ok &= counts[rows, cat] < cap
            r = rows[ok]
            out[r, taken[r]] = item[r]
            out_scores[r, taken[r]] = top_scores[r, j]
            counts[r, cat[r]] += 1
            taken[r] += 1
            used[r, j] = True
    order = np.argsort(-out_scores, axis=1, kind="stable")
    return np.take_along_axis(out, order, axis=1), np.take_along_axis(out_scores, order, axis=1)


def shared_rows_top_k(table, row_of_user, exclude, k, blocked):
    """Top-k when each user's scores are one of a few shared rows (the popularity lists).

    A user excludes at most ``extra`` items (the longest purchase list in the batch), so their
    top-k lies within the best ``k + extra`` columns of their row. Only the union of those
    columns is scored: exact, and no users × items block is built.
    """
    # float64: the popularity tie-breaks (1e-6 per rank) vanish in float32 above ~10 buyers.
    table = np.array(table, dtype=np.float64, copy=True)
    if blocked is not None and len(blocked):
        table[:, blocked] = -np.inf
    extra = int(np.diff(exclude.indptr).max(initial=0))
    width = min(k + extra, table.shape[1])
    cand = np.unique(np.argpartition(-table, width - 1, axis=1)[:, :width])
    # Columns first: indexing rows first would build a batch × every-item float64 block.
    scores = table[:, cand][row_of_user]
    position = np.full(table.shape[1], -1, dtype=np.int64)
    position[cand] = np.arange(len(cand))
    mask_purchased(scores, exclude, position)
    ids, top = top_n(scores, k)
    return cand[ids], top.astype(np.float32)
