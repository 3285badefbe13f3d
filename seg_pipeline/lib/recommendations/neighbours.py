"""Item-item nearest neighbours (cosine, TF-IDF, BM25) from ``implicit``, and the extraction of
each item's most similar items for ``item_similarities``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import (
    BM25Recommender,
    CosineRecommender,
    TFIDFRecommender,
)
from implicit.utils import ParameterWarning

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.reasons import (
    explain_by_similarity,
    top_per_row,
)

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

    def fit(self, data: InteractionMatrix) -> ItemKNNRecommender:
        if self.weighting not in _KNN:
            raise ValueError(f"unknown item-KNN weighting {self.weighting!r}; use {sorted(_KNN)}")
        self.model_ = _KNN[self.weighting](K=self.k)
        with warnings.catch_warnings():
            # implicit's own TF-IDF/BM25 weighting passes its fit a COO matrix, then warns about it.
            warnings.simplefilter("ignore", ParameterWarning)
            self.model_.fit(data.weights.astype(np.float32).tocsr(), show_progress=False)
        self.weights_ = data.weights.tocsr().astype(np.float32)
        return self

    @property
    def similarity(self) -> sp.csr_matrix:
        return self.model_.similarity.tocsr()

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.weights_[users] @ self.similarity).toarray()

    def item_side(self) -> tuple:
        return self.weights_, self.similarity

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        # implicit scores item j as sum_i w_ui * sim[i, j]: the explaining term lives in column j.
        return explain_by_similarity(recs, history, self.similarity.T.tocsr())[0]


def top_similar_items(
    similarity: sp.csr_matrix, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``n`` neighbours of every item from a sparse similarity matrix, self excluded.

    Returns three aligned arrays: item column, neighbour column and similarity.
    """
    sim = similarity.tocsr().astype(np.float32)
    sim.setdiag(0)
    sim.eliminate_zeros()
    rows, cols, vals, _ = top_per_row(sim, n)
    return rows, cols.astype(np.int64), vals


def item_similarity_pairs(
    matrix: InteractionMatrix, n: int, weighting: str, knn_neighbours: int
) -> tuple[np.ndarray, ...]:
    """Fit item-item KNN on ``matrix``; each item's ``n`` most similar items as
    (item column, similar item column, score) arrays.

    It needs only the matrix and touches no database, so a night computes it on a second thread
    while the lists are written and logged: registering Arrow tables in DuckDB from two threads
    at once once failed in CI ("Table Function with name python_arrow_scan does not exist").
    """
    knn = ItemKNNRecommender(weighting=weighting, k=knn_neighbours).fit(matrix)
    return top_similar_items(knn.similarity, n)
