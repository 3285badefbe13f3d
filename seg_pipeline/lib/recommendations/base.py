"""The interface every recommender implements: fit on an InteractionMatrix, score in batches.

Every model's ``recommend`` returns item columns and scores for a batch of users, never an item
in ``exclude`` (the purchased mask) or in ``blocked`` (unavailable items), optionally with at most
``max_per_category`` items of one category per list. Scoring runs in batches so memory stays
bounded by ``batch_size × n_items`` whatever the number of customers.

Each model also says how its recommendations are explained (``reason``): by the purchased item
that drove the score ("because"), by content similarity ("similar"), or by popularity ("popular",
"segment").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.parallel import each_in_threads
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.topk import (
    Recommendations,
    cap_applies,
    cap_categories,
    mask_purchased,
    top_n,
)


class CannotFit(ValueError):
    """The data cannot support this candidate (too many items for a dense model, too few
    ratings for a factorisation): the evaluation reports it and passes over it, and the night
    goes on with the others."""


class Recommender:
    """Base class. Subclasses set ``name`` and ``reason`` and implement ``fit`` and ``score``."""

    name = "base"
    reason = "because"

    def params(self) -> dict:
        return {}

    def fit(self, data: InteractionMatrix) -> Recommender:
        raise NotImplementedError

    def score(self, users: np.ndarray) -> np.ndarray:
        """Dense scores (len(users) × n_items); higher is better."""
        raise NotImplementedError

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """The history item column behind each recommendation, or -1."""
        return np.full(recs.shape, -1, dtype=np.int64)

    def group_scorer(self, groups: sp.csr_matrix):
        """A function from a batch of users to their summed scores over each group of items
        (``groups``: items × G, 0/1), for audiences: one item per group, or a category's items.

        This default scores every item; models whose score is linear in an item-side matrix
        (``item_side``) fold the groups into it once, so an audience costs G columns, not the
        catalogue.
        """
        side = self.item_side()
        if side is None:
            groups_t = groups.T.tocsr()
            return lambda users: (
                np.asarray(groups_t @ np.asarray(self.score(users), dtype=np.float32).T).T
            )
        user_side, item_side = side
        folded = item_side @ groups
        folded = folded.toarray() if sp.issparse(folded) else np.asarray(folded)
        return lambda users: np.asarray(user_side[users] @ folded, dtype=np.float32)

    def item_side(self) -> tuple | None:
        """``(user_side, item_side)`` with ``score(users) == user_side[users] @ item_side``, for
        models that score that way; None for the others."""
        return None

    def _batch_size(self, n_items: int) -> int:
        # One dense block (batch × scored items) per thread, about 16M scores: with selection's
        # temporaries a few hundred MB per thread; larger blocks raised the peak memory.
        return max(64, min(16_384, 16_000_000 // max(n_items, 1)))

    def _top_k(self, batch, exclude, k, blocked):
        """Best ``k`` item columns and scores per user of ``batch``; ineligible ones are -inf."""
        scores = np.require(self.score(batch), dtype=np.float32, requirements="W")
        mask_purchased(scores, exclude)
        if blocked is not None and len(blocked):
            scores[:, blocked] = -np.inf
        return top_n(scores, k)

    def recommend(
        self,
        users: np.ndarray,
        exclude: sp.csr_matrix,
        n: int,
        *,
        blocked: np.ndarray | None = None,
        categories: np.ndarray | None = None,
        max_per_category: int | None = None,
        batch_size: int | None = None,
        rerank=None,
        pool: int | None = None,
    ) -> Recommendations:
        """Top-``n`` eligible items for each row index in ``users`` (-1 pads a short list).

        The default batch keeps one dense score block near 16M floats (64 MB). ``rerank`` (with
        ``pool``) turns each batch's top ``pool`` items and scores into ``n`` (diversity.py), so
        the wider pool never exists for every customer at once.
        """
        users = np.asarray(users)
        capped = cap_applies(categories, max_per_category)
        k = min(pool if rerank else n * 4 if capped else n, exclude.shape[1])

        def finish(top, top_scores):
            if rerank is not None:
                top[~np.isfinite(top_scores)] = -1
                return rerank(top, top_scores)
            if capped:
                top, top_scores = cap_categories(top, top_scores, categories, max_per_category, n)
            top[~np.isfinite(top_scores)] = -1
            return top, top_scores

        self._prepare_scoring(users, exclude, n, k, blocked)
        try:
            items, scores = self._top_k_batches(users, exclude, k, blocked, n, finish, batch_size)
        finally:
            self._finish_scoring()
        return Recommendations(items=items, scores=scores)

    def _top_k_batches(self, users, exclude, k, blocked, width, finish=None, batch_size=None):
        """``_top_k`` for every user, one batch per core; ``finish`` post-processes a batch.

        Returns ``width`` columns per user (-1 and -inf pad a short list).
        """
        out_items = np.full((len(users), width), -1, dtype=np.int64)
        out_scores = np.full((len(users), width), -np.inf, dtype=np.float32)
        size = batch_size or self._batch_size(exclude.shape[1])

        def one_batch(start: int) -> None:
            batch = users[start : start + size]
            top, top_scores = self._top_k(batch, exclude[batch].tocsr(), k, blocked)
            if finish is not None:
                top, top_scores = finish(top, top_scores)
            m = min(width, top.shape[1])
            out_items[start : start + len(batch), :m] = top[:, :m]
            out_scores[start : start + len(batch), :m] = top_scores[:, :m]

        each_in_threads(one_batch, range(0, len(users), size))
        return out_items, out_scores

    def _prepare_scoring(self, users, exclude, n, k, blocked) -> None:
        """Hook run before the batches of one ``recommend`` call (see ALSRecommender)."""

    def _finish_scoring(self) -> None:
        """Hook run after the batches of one ``recommend`` call."""
