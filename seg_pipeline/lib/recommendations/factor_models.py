"""Matrix factorisation on implicit feedback: ALS (with BM25 confidence weighting, fold-in of
new histories and candidate-pool scoring at scale) and BPR, both from ``implicit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.popularity import binary_matrix
from seg_pipeline.lib.recommendations.reasons import (
    explain_by_vectors,
)
from seg_pipeline.lib.recommendations.topk import mask_purchased, top_n

# BM25 confidence weighting of the ALS input (k1 large: counts saturate slowly; b: length norm).
BM25_K1, BM25_B = 100.0, 0.8


def bm25_stats(weights: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """The corpus statistics of BM25 weighting: each item's idf and the mean row total.

    Kept apart from the weighting itself (``bm25_rows``) so that a kept model can weight a
    customer's row with the statistics it was trained on: the row's weights then depend on that
    customer's history only, not on how many other customers bought each item since.
    """
    weights = weights.tocsr()
    n_users, n_items = weights.shape
    support = np.bincount(weights.indices, minlength=n_items)
    idf = np.log(max(n_users, 1)) - np.log1p(support)
    totals = np.bincount(_row_index(weights), weights=weights.data, minlength=n_users)
    return idf, float(totals.mean()) if n_users else 1.0


def bm25_rows(weights: sp.csr_matrix, idf: np.ndarray, average_length: float) -> sp.csr_matrix:
    """implicit's ``bm25_weight`` (K1=100, B=0.8) with given corpus statistics.

    Each output row is computed from its own input row alone, so the same history gives the same
    weighted row whichever other rows are in the batch.
    """
    weights = weights.tocsr()
    rows = _row_index(weights)
    totals = np.bincount(rows, weights=weights.data, minlength=weights.shape[0])
    norm = (1.0 - BM25_B) + BM25_B * totals / max(average_length, 1e-12)
    data = weights.data * (BM25_K1 + 1.0) / (BM25_K1 * norm[rows] + weights.data)
    data = data * idf[weights.indices]
    return sp.csr_matrix(
        (data.astype(np.float32), weights.indices.copy(), weights.indptr.copy()),
        shape=weights.shape,
    )


def item_gram(item_factors: np.ndarray) -> np.ndarray:
    """``Y.T @ Y`` on one BLAS thread, so the same factors always give the same bits."""
    with threadpool_limits(limits=1, user_api="blas"):
        return item_factors.T.dot(item_factors)


def _row_index(matrix: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))


@dataclass
class ALSRecommender(Recommender):
    """implicit's ALS, on BM25-weighted confidences by default (as implicit's own examples)."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    bm25: bool = True
    random_state: int = 42
    name: str = "als"
    pool_min_users: int | None = None
    pool_min_recall: float = 0.99
    pool_probe: int = 10_000
    pool_check: int = 5_000
    warm_start_iterations: int | None = None
    fixed_pool: np.ndarray | None = field(default=None, repr=False)
    model_: AlternatingLeastSquares | None = field(default=None, repr=False)
    bm25_idf_: np.ndarray | None = field(default=None, repr=False)
    bm25_average_length_: float | None = field(default=None, repr=False)
    item_support_: np.ndarray | None = field(default=None, repr=False)
    item_gram_: np.ndarray | None = field(default=None, repr=False)
    pool_items_: np.ndarray | None = field(default=None, repr=False)
    scoring_: dict | None = field(default=None, repr=False)
    _pool: tuple | None = field(default=None, repr=False, compare=False)

    def params(self) -> dict:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "bm25": self.bm25,
        }

    def fit(self, data: InteractionMatrix, *, fold_in: bool = False) -> ALSRecommender:
        """Fit on ``data``; with ``warm_start_iterations``, refit from the previous fit's items.

        With ``fold_in``, the user factors are then solved once more against the final item
        factors (see ``fold_in``), reusing the weighted matrix of the fit.

        A warm refit starts from the item factors of the previous ``fit`` (when ``data`` has
        the same item columns) and runs ``warm_start_iterations`` instead of ``iterations``:
        the champion, chosen on a sample, is refitted on everyone from its sample solution. On
        the 10M benchmark's held-out month, two or three warm iterations from a 50k-customer fit
        matched eight cold ones in NDCG@10 in a fraction of the time; the published user
        factors come from ``fold_in`` after the fit, and two warm iterations are the nightly
        default (the figures are in bench/RESULTS.md).
        """
        weights = data.weights.tocsr()
        if self.bm25:
            self.bm25_idf_, self.bm25_average_length_ = bm25_stats(weights)
        matrix = self._weighted(weights)
        self.item_support_ = np.bincount(weights.indices, minlength=data.shape[1])
        previous = self.model_.item_factors if self.model_ is not None else None
        warm = (
            self.warm_start_iterations is not None
            and previous is not None
            and previous.shape == (data.shape[1], self.factors)
        )
        model = self._implicit_model(self.warm_start_iterations if warm else self.iterations)
        if warm:
            # implicit only initialises the factors that are not set yet.
            model.item_factors = np.array(previous, dtype=np.float32, copy=True)
        # implicit parallelises across its own threads; nested multi-threaded BLAS only slows it.
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(matrix, show_progress=False)
        self.model_ = model
        self.item_gram_ = None
        if fold_in:
            self._solve_users(matrix)
        return self

    def _implicit_model(self, iterations: int) -> AlternatingLeastSquares:
        # implicit checks the BLAS setting when the model is created (and warns once about a
        # multi-threaded BLAS), so it is created under the same limit as the fit.
        with threadpool_limits(limits=1, user_api="blas"):
            return AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=iterations,
                random_state=self.random_state,
                calculate_training_loss=False,
            )

    def _weighted(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        if not self.bm25:
            return weights.astype(np.float32).tocsr()
        return bm25_rows(weights, self.bm25_idf_, self.bm25_average_length_)

    def fold_in(self, weights: sp.csr_matrix) -> ALSRecommender:
        """Solve the user factors of ``weights``' rows against the fitted item factors.

        This is ALS's own user step (an exact least-squares solve, implicit's
        ``recalculate_user``) with the training's BM25 statistics, so a customer's factors are a
        function of their own history and the item side alone. Published lists use these
        factors, on a refit night for everyone and on the nights between for the customers
        whose history changed: both give the same list for the same history. The fit's own
        user factors were solved against the previous iteration's item factors instead.
        """
        return self._solve_users(self._weighted(weights))

    def _solve_users(self, matrix: sp.csr_matrix) -> ALSRecommender:
        model = self.model_
        if self.item_gram_ is None:
            self.item_gram_ = item_gram(model.item_factors)
        # Set, not left to implicit: a kept model's current items may include new ones, whose
        # zero rows would change the summation order of Y.T @ Y and the last bits of every solve.
        model._YtY = self.item_gram_
        with threadpool_limits(limits=1, user_api="blas"):
            model.user_factors = model.recalculate_user(np.arange(matrix.shape[0]), matrix)
        return self

    @classmethod
    def from_items(
        cls,
        item_factors: np.ndarray,
        *,
        gram: np.ndarray,
        idf: np.ndarray | None,
        average_length: float | None,
        item_support: np.ndarray,
        **params,
    ) -> ALSRecommender:
        """A fitted model rebuilt from kept item-side state, ready for ``fold_in``.

        ``item_factors`` has a row per current item (zeros for items the model never saw: they
        score 0 and are recommended only where nothing scores higher); ``gram`` is
        ``item_gram`` of the factors as trained.
        """
        self = cls(**params)
        model = self._implicit_model(self.iterations)
        model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.item_gram_ = gram
        self.model_ = model
        self.bm25_idf_, self.bm25_average_length_ = idf, average_length
        self.item_support_ = item_support
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.model_.user_factors[users] @ self.model_.item_factors.T

    def item_side(self) -> tuple:
        return self.model_.user_factors, self.model_.item_factors.T

    def _batch_size(self, n_items: int) -> int:
        return super()._batch_size(len(self._pool[0]) if self._pool is not None else n_items)

    def _top_k(self, batch, exclude, k, blocked):
        """Exact: the base dense path (one matmul per batch, block-max selection), which beat
        implicit's ``topk`` at 10M events. With a pool: only the pool's columns."""
        if self._pool is None:
            return super()._top_k(batch, exclude, k, blocked)
        pool, position = self._pool
        scores = self.model_.user_factors[batch] @ self.model_.item_factors[pool].T
        mask_purchased(scores, exclude, position)
        ids, scores = top_n(scores, k)
        ids = pool[ids]
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.hstack([ids, np.zeros((len(batch), pad), np.int64)])
            scores = np.hstack([scores, np.full((len(batch), pad), -np.inf, np.float32)])
        # A customer who already bought much of the pool gets a short list from it: score them
        # against every item instead, so pooling never shortens a list.
        short = np.flatnonzero(~np.isfinite(scores[:, -1]))
        if len(short):
            ids[short], scores[short] = super()._top_k(batch[short], exclude[short], k, blocked)
        return ids, scores

    def _prepare_scoring(self, users, exclude, n, k, blocked) -> None:
        """Above ``pool_min_users`` customers, score only a candidate pool of items.

        ALS lists concentrate on few items: on 10M synthetic events (16 factors) the top-40 of
        5k, 10k and 20k random customers used 679, 683 and 690 of 50k items, and each pool held
        every item of 5k other customers' exact top-10. So the pool is the union of the exact
        top-k of ``pool_probe`` random customers (10k: the pool has saturated by then). Its cost
        is measured every run: ``pool_check`` other customers are scored exactly and pooled, and
        the share of ranks in their top-``n`` where the pooled list scores as high as the exact
        one (recall) goes to ``scoring_``. Below ``pool_min_recall`` the pool is dropped and
        everyone is scored exactly.
        """
        self._pool = None
        n_items = self.model_.item_factors.shape[0]
        self.scoring_ = {"scoring": "exact", "scored_items": n_items}
        if self.fixed_pool is not None:
            # A kept model scores with the pool chosen when it was fitted, so a customer's list
            # does not depend on which other customers are scored tonight.
            pool = np.asarray(self.fixed_pool, dtype=np.int64)
            position = np.full(n_items, -1, dtype=np.int64)
            position[pool] = np.arange(len(pool))
            self._pool = (pool, position)
            self.scoring_ = {"scoring": "candidate_pool (kept)", "scored_items": int(len(pool))}
            return
        self.pool_items_ = None
        probe_n, check_n = self.pool_probe, self.pool_check
        if self.pool_min_users is None or len(users) < max(self.pool_min_users, probe_n + check_n):
            return
        picked = np.random.default_rng(self.random_state).choice(
            len(users), probe_n + check_n, replace=False
        )
        probe, check = np.sort(users[picked[:probe_n]]), np.sort(users[picked[probe_n:]])
        # Exact lists (no pool yet); blocked and purchased items score -inf and stay out.
        probe_top, probe_scores = self._top_k_batches(probe, exclude, k, blocked, k)
        pool = np.unique(probe_top[np.isfinite(probe_scores)])
        if len(pool) > n_items // 2:
            return  # no saving worth an approximation
        position = np.full(n_items, -1, dtype=np.int64)
        position[pool] = np.arange(len(pool))
        _, exact_scores = self._top_k_batches(check, exclude, k, blocked, k)
        self._pool = (pool, position)
        _, pooled_scores = self._top_k(check, exclude[check].tocsr(), k, blocked)
        # Compared by score, rank by rank: among tied items (a customer whose factors are all
        # zero ties every item) any choice is as good as the exact one.
        exact_scores, pooled_scores = exact_scores[:, :n], pooled_scores[:, :n]
        real = np.isfinite(exact_scores)
        kept = pooled_scores >= exact_scores - 1e-6 * np.abs(exact_scores)
        recall = float((kept & real).sum() / max(real.sum(), 1))
        self.scoring_ = {
            "scoring": "candidate_pool",
            "scored_items": int(len(pool)),
            "pool_recall": recall,
            "pool_probe_customers": probe_n,
            "pool_check_customers": check_n,
        }
        if recall < self.pool_min_recall:
            self._pool = None
            self.scoring_["scoring"] = "exact (pool recall too low)"
            self.scoring_["scored_items"] = n_items
        else:
            self.pool_items_ = pool

    def _finish_scoring(self) -> None:
        self._pool = None

    @property
    def item_vectors(self) -> np.ndarray:
        return self.model_.item_factors

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return explain_by_vectors(recs, history, self.item_vectors)[0]


@dataclass
class BPRRecommender(ALSRecommender):
    """implicit's Bayesian Personalised Ranking: optimises the ranking of bought over unbought."""

    factors: int = 64
    learning_rate: float = 0.05
    regularization: float = 0.01
    iterations: int = 100
    name: str = "bpr"

    def params(self) -> dict:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
        }

    def fit(self, data: InteractionMatrix) -> BPRRecommender:
        with threadpool_limits(limits=1, user_api="blas"):
            # One thread: implicit's multi-threaded SGD is lock-free (Hogwild), so the same input
            # would give slightly different models, and the nightly tables must be reproducible.
            model = BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=self.learning_rate,
                regularization=self.regularization,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=1,
            )
            model.fit(binary_matrix(data.weights).tocsr(), show_progress=False)
        self.model_ = model
        return self
