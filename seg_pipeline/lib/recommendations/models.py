"""Recommender models behind one small interface: fit on a users × items CSR, score in batches.

Each model's ``recommend`` returns item columns and scores for a batch of users, never an item in
``exclude`` (the purchased mask) or in ``blocked`` (unavailable items). Scoring runs in batches so
memory stays bounded by ``batch_size × n_items`` whatever the number of customers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import (
    BM25Recommender,
    CosineRecommender,
    TFIDFRecommender,
    bm25_weight,
)
from implicit.utils import ParameterWarning
from threadpoolctl import threadpool_limits


@dataclass
class Recommendations:
    """Top-N per user: ``items[u, r]`` is the column of user ``u``'s rank ``r + 1`` item."""

    items: np.ndarray
    scores: np.ndarray


class Recommender:
    """Base class. Subclasses set ``name`` and implement ``fit`` and ``_score``."""

    name = "base"

    def params(self) -> dict:
        return {}

    def fit(self, weights: sp.csr_matrix) -> Recommender:
        raise NotImplementedError

    def recommend(
        self,
        users: np.ndarray,
        exclude: sp.csr_matrix,
        n: int,
        *,
        blocked: np.ndarray | None = None,
        batch_size: int = 2048,
    ) -> Recommendations:
        """Top-``n`` unseen items for each row index in ``users``.

        ``exclude`` is a users × items matrix (all users); its non-zeros are never recommended.
        A list is padded with -1 when fewer than ``n`` items are eligible.
        """
        out_items = np.full((len(users), n), -1, dtype=np.int64)
        out_scores = np.full((len(users), n), -np.inf, dtype=np.float32)
        for start in range(0, len(users), batch_size):
            batch = np.asarray(users[start : start + batch_size])
            scores = np.asarray(self._score(batch), dtype=np.float32)
            mask = exclude[batch]
            scores[np.repeat(np.arange(len(batch)), np.diff(mask.indptr)), mask.indices] = -np.inf
            if blocked is not None and len(blocked):
                scores[:, blocked] = -np.inf
            k = min(n, scores.shape[1])
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            top[~np.isfinite(top_scores)] = -1
            out_items[start : start + len(batch), :k] = top
            out_scores[start : start + len(batch), :k] = top_scores
        return Recommendations(items=out_items, scores=out_scores)

    def _score(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class PopularityRecommender(Recommender):
    """Everyone gets the items bought by the most distinct customers: the baseline to beat."""

    name: str = "popularity"
    popularity_: np.ndarray | None = field(default=None, repr=False)

    def fit(self, weights: sp.csr_matrix) -> PopularityRecommender:
        binary = weights.copy()
        binary.data = np.ones_like(binary.data)
        counts = np.asarray(binary.sum(axis=0)).ravel()
        # A tiny rank-based tie-break keeps the order deterministic among equally popular items.
        self.popularity_ = counts + 1e-6 * (1 - np.arange(len(counts)) / max(len(counts), 1))
        return self

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(users), len(self.popularity_))).copy()


@dataclass
class ALSRecommender(Recommender):
    """implicit's ALS on BM25-weighted confidences (the weighting implicit's own examples use)."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    bm25: bool = True
    random_state: int = 42
    name: str = "als"
    model_: AlternatingLeastSquares | None = field(default=None, repr=False)

    def params(self) -> dict:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "bm25": self.bm25,
        }

    def fit(self, weights: sp.csr_matrix) -> ALSRecommender:
        matrix = bm25_weight(weights, K1=100, B=0.8).tocsr() if self.bm25 else weights
        # implicit parallelises across its own threads; nested multi-threaded BLAS only slows it
        # (implicit checks the BLAS setting when the model is created, so both go inside).
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                calculate_training_loss=False,
            )
            model.fit(matrix.astype(np.float32).tocsr(), show_progress=False)
        self.model_ = model
        return self

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.model_.user_factors[users] @ self.model_.item_factors.T

    @property
    def item_vectors(self) -> np.ndarray:
        return self.model_.item_factors


_KNN = {"cosine": CosineRecommender, "tfidf": TFIDFRecommender, "bm25": BM25Recommender}


@dataclass
class ItemKNNRecommender(Recommender):
    """Item-item nearest neighbours from implicit, with cosine, TF-IDF or BM25 weighting."""

    weighting: str = "cosine"
    k: int = 50
    name: str = ""
    model_: object | None = field(default=None, repr=False)
    weights_: sp.csr_matrix | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or f"item_knn_{self.weighting}"

    def params(self) -> dict:
        return {"weighting": self.weighting, "k": self.k}

    def fit(self, weights: sp.csr_matrix) -> ItemKNNRecommender:
        if self.weighting not in _KNN:
            raise ValueError(f"unknown item-KNN weighting {self.weighting!r}; use {sorted(_KNN)}")
        self.model_ = _KNN[self.weighting](K=self.k)
        with warnings.catch_warnings():
            # implicit's own TF-IDF/BM25 weighting passes its fit a COO matrix, then warns about it.
            warnings.simplefilter("ignore", ParameterWarning)
            self.model_.fit(weights.astype(np.float32).tocsr(), show_progress=False)
        self.weights_ = weights.tocsr().astype(np.float32)
        return self

    @property
    def similarity(self) -> sp.csr_matrix:
        return self.model_.similarity.tocsr()

    def _score(self, users: np.ndarray) -> np.ndarray:
        return (self.weights_[users] @ self.similarity).toarray()


def top_similar_items(
    similarity: sp.csr_matrix, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``n`` neighbours of every item from a sparse similarity matrix, self excluded.

    Returns three aligned arrays: item column, neighbour column and similarity.
    """
    sim = similarity.tocsr().astype(np.float32)
    sim.setdiag(0)
    sim.eliminate_zeros()
    sim.sort_indices()
    rows, cols, vals = [], [], []
    for i in range(sim.shape[0]):
        start, end = sim.indptr[i], sim.indptr[i + 1]
        if start == end:
            continue
        idx, data = sim.indices[start:end], sim.data[start:end]
        order = np.lexsort((idx, -data))[:n]
        rows.append(np.full(len(order), i))
        cols.append(idx[order])
        vals.append(data[order])
    if not rows:
        return np.empty(0, int), np.empty(0, int), np.empty(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
