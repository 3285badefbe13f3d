"""Content-based recommendations: TF-IDF similarity of item titles and descriptions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.popularity import binary_matrix
from seg_pipeline.lib.recommendations.reasons import (
    explain_by_similarity,
)


def content_similarity(texts: np.ndarray, k: int) -> sp.csr_matrix:
    """Item-item cosine similarity of TF-IDF vectors of the item text, top ``k`` per item."""
    docs = [str(t) if t is not None else "" for t in texts]
    if not any(d.strip() for d in docs):
        return sp.csr_matrix((len(docs), len(docs)), dtype=np.float32)
    tfidf = TfidfVectorizer(min_df=1, ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)
    vectors = tfidf.fit_transform(docs).astype(np.float32)
    rows, cols, vals = [], [], []
    for start in range(0, vectors.shape[0], 1024):
        block = (vectors[start : start + 1024] @ vectors.T).toarray()
        np.fill_diagonal(block[:, start : start + block.shape[0]], 0)
        kk = min(k, block.shape[1] - 1) if block.shape[1] > 1 else 0
        if kk <= 0:
            continue
        top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
        top_vals = np.take_along_axis(block, top, axis=1)
        keep = top_vals > 0
        rows.append(np.repeat(np.arange(start, start + block.shape[0]), kk)[keep.ravel()])
        cols.append(top[keep])
        vals.append(top_vals[keep])
    n = vectors.shape[0]
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


@dataclass
class ContentRecommender(Recommender):
    """Items whose title and description read like what the customer bought (TF-IDF, cosine).

    It needs no interactions on the recommended item, so it reaches items nobody bought yet.
    """

    k: int = 50
    name: str = "content_tfidf"
    reason: str = "similar"
    similarity_: sp.csr_matrix | None = field(default=None, repr=False)
    weights_: sp.csr_matrix | None = field(default=None, repr=False)

    def params(self) -> dict:
        return {"k": self.k}

    def fit(self, data: InteractionMatrix) -> ContentRecommender:
        texts = data.item_text if data.item_text is not None else data.item_ids
        # Similarity runs from a bought item to its neighbours: transpose so rows are targets.
        self.similarity_ = content_similarity(texts, self.k).T.tocsr()
        self.weights_ = binary_matrix(data.weights)
        return self

    @property
    def similarity(self) -> sp.csr_matrix:
        return self.similarity_

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.weights_[users] @ self.similarity_.T).toarray()

    def item_side(self) -> tuple:
        return self.weights_, self.similarity_.T.tocsr()

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return explain_by_similarity(recs, history, self.similarity_)[0]
