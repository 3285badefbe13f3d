"""Popularity baselines: the whole shop's most bought items (optionally over a recent window),
and each segment's, which also serve as the cold-start lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.topk import shared_rows_top_k


def binary_matrix(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.copy().astype(np.float32)
    out.data = np.ones_like(out.data)
    return out


def recent_purchases(data: InteractionMatrix, window_days: int | None) -> sp.csr_matrix:
    """Binary customer × item interactions, only those within ``window_days`` of the cut-off."""
    binary = binary_matrix(data.weights)
    if window_days is None or data.days_ago is None:
        return binary
    recent = data.days_ago.copy()
    recent.data = (recent.data <= window_days + 1).astype(np.float32)
    recent.eliminate_zeros()
    return recent


@dataclass
class PopularityRecommender(Recommender):
    """Everyone gets the items most customers interacted with (optionally in a recent window)."""

    window_days: int | None = None
    name: str = "popularity"
    reason: str = "popular"
    popularity_: np.ndarray | None = field(default=None, repr=False)

    def params(self) -> dict:
        return {"window_days": self.window_days}

    def fit(self, data: InteractionMatrix) -> PopularityRecommender:
        counts = np.asarray(recent_purchases(data, self.window_days).sum(axis=0)).ravel()
        # A tiny rank-based tie-break keeps the order deterministic among equally popular items.
        self.popularity_ = counts + 1e-6 * (1 - np.arange(len(counts)) / max(len(counts), 1))
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(users), len(self.popularity_)))

    def _top_k(self, batch, exclude, k, blocked):
        return shared_rows_top_k(
            self.popularity_[None, :], np.zeros(len(batch), np.int64), exclude, k, blocked
        )


@dataclass
class SegmentPopularityRecommender(Recommender):
    """Items most popular in the customer's own segment; the shop's for customers without one."""

    window_days: int | None = None
    name: str = "segment_popularity"
    reason: str = "segment"
    table_: np.ndarray | None = field(default=None, repr=False)
    segments_: np.ndarray | None = field(default=None, repr=False)

    def params(self) -> dict:
        return {"window_days": self.window_days}

    def fit(self, data: InteractionMatrix) -> SegmentPopularityRecommender:
        recent = recent_purchases(data, self.window_days)
        segments = (
            data.user_segments if data.user_segments is not None else np.full(recent.shape[0], -1)
        )
        n_seg = int(segments.max()) + 1
        overall = np.asarray(recent.sum(axis=0)).ravel()
        table = np.tile(overall / max(recent.shape[0], 1), (n_seg + 1, 1))
        if n_seg > 0:
            known = segments >= 0
            onehot = sp.csr_matrix(
                (np.ones(known.sum(), dtype=np.float32), (segments[known], np.flatnonzero(known))),
                shape=(n_seg, recent.shape[0]),
            )
            sizes = np.maximum(np.asarray(onehot.sum(axis=1)).ravel(), 1)
            table[:n_seg] = (onehot @ recent).toarray() / sizes[:, None]
        tie = 1e-9 * (1 - np.arange(table.shape[1]) / max(table.shape[1], 1))
        self.table_ = table + tie
        self.segments_ = segments
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.table_[self.segments_[users]]  # row -1 is the shop-wide row

    def _top_k(self, batch, exclude, k, blocked):
        rows = self.segments_[batch] % len(self.table_)  # -1 is the last, shop-wide row
        return shared_rows_top_k(self.table_, rows, exclude, k, blocked)
