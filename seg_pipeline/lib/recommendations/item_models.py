"""The strong simple item-item models: EASE, RP3beta and item-KNN with shrinkage.

Dacrema et al. (2019, "Are we really making much progress?") found these the hardest baselines
to beat on implicit feedback, and a user can write either in twenty lines of numpy, so they
compete for the champion like any other family.

* **EASE** (Steck 2019) learns the item-item weights in closed form, a ridge regression of every
  item's column on all the others with a zero diagonal: ``B = I - P / diag(P)`` with
  ``P = (XᵀX + λI)⁻¹``. The inverse is dense ``n_items²``, so catalogues above ``max_items`` skip
  it (``fit`` raises ``TooManyItems``, which the evaluation reports and passes over).
* **RP3beta** (Paudel et al. 2017) scores by a three-step random walk user → item → user → item
  whose item-item transition ``Pᵢᵤ Pᵤᵢ`` is divided by the target's popularity to the power β
  (and each transition raised to α), keeping each item's ``k`` strongest neighbours.

* **Item-KNN with shrinkage** (as in Dacrema et al.'s baselines): cosine whose denominator is
  raised by ``shrink``, which discounts similarities resting on a few co-buyers.

EASE and RP3beta learn from which items a customer interacted with (``weights > 0``), as their
authors' implicit-feedback setups do; the shrunk cosine from the confidence weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from seg_pipeline.lib.recommendations.base import CannotFit, Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.reasons import explain_by_similarity, top_per_row


class TooManyItems(CannotFit):
    """The catalogue is too large for a dense item-item model."""


def _binary(data: InteractionMatrix, half_life_days: float | None = None) -> sp.csr_matrix:
    """1 per customer-item pair of the matrix; with ``half_life_days``, halved for every that
    many days since the pair's last event (recent tastes count more, on both the learning and
    the scoring side)."""
    x = data.weights.tocsr().astype(np.float32)
    x.data[:] = 1.0
    if half_life_days is not None and data.days_ago is not None:
        # days_ago holds 1 + the age in days of every pair of the matrix.
        decay = data.days_ago.tocsr().astype(np.float32)
        decay.data = 0.5 ** ((decay.data - 1) / half_life_days)
        x = x.multiply(decay).tocsr()
    x.eliminate_zeros()
    return x


def keep_top(matrix: np.ndarray | sp.spmatrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` largest positive entries as a sparse matrix (the rest dropped)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.data[csr.data < 0] = 0
    csr.eliminate_zeros()
    rows, cols, vals, _ = top_per_row(csr, k)
    return sp.csr_matrix((vals, (rows, cols)), shape=csr.shape, dtype=np.float32)


@dataclass
class EASERecommender(Recommender):
    """Embarrassingly shallow autoencoder: closed-form item-item weights with L2 ``l2``."""

    l2: float = 500.0
    half_life_days: float | None = None
    max_items: int = 20_000
    name: str = "ease"
    x_: sp.csr_matrix | None = field(default=None, repr=False)
    weights_: np.ndarray | None = field(default=None, repr=False)
    explainer_: sp.csr_matrix | None = field(default=None, repr=False)

    def params(self) -> dict:
        decay = {} if self.half_life_days is None else {"half_life_days": self.half_life_days}
        return {"l2": self.l2, **decay}

    def fit(self, data: InteractionMatrix) -> EASERecommender:
        n_items = data.shape[1]
        if n_items > self.max_items:
            raise TooManyItems(
                f"EASE skipped: {n_items:,} items exceed max_items={self.max_items:,} "
                "(its dense item-item inverse grows with the square of the catalogue)"
            )
        x = _binary(data, self.half_life_days)
        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices(n_items)] += self.l2
        # The Gram matrix plus λI is symmetric positive definite: a Cholesky inverse in single
        # precision (about 1e-6 relative to the double-precision inverse) is the cheaper one.
        factor, info = lapack.spotrf(gram, lower=False, clean=False, overwrite_a=True)
        if info == 0:
            upper, info = lapack.spotri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: the regularised Gram matrix is singular ({info})")
        inverse = np.triu(upper) + np.triu(upper, 1).T
        weights = -inverse / np.diag(inverse)[None, :]
        weights[np.diag_indices(n_items)] = 0.0
        self.x_, self.weights_, self.explainer_ = x, weights, None
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.x_[users] @ self.weights_)

    def item_side(self) -> tuple:
        return self.x_, self.weights_

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        # score_j = sum_i x_ui B[i, j]: the explaining item is the largest B[i, j] in the history.
        # The sparse top of B is built once per fit: lists and audiences both ask.
        if self.explainer_ is None:
            self.explainer_ = keep_top(self.weights_.T, 100)
        return explain_by_similarity(recs, history, self.explainer_)[0]


class _SparseItemItem(Recommender):
    """Scoring and reasons of a model whose item-item weights are a sparse ``similarity_``
    (``similarity_[i, j]``: how much buying i supports recommending j) over ``x_``."""

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.x_[users] @ self.similarity_).toarray()

    def item_side(self) -> tuple:
        return self.x_, self.similarity_

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return explain_by_similarity(recs, history, self.similarity_.T.tocsr())[0]


@dataclass
class RP3BetaRecommender(_SparseItemItem):
    """Random walk user → item → user → item, penalised by target popularity to the power β."""

    alpha: float = 1.0
    beta: float = 0.5
    k: int = 200
    name: str = "rp3beta"
    x_: sp.csr_matrix | None = field(default=None, repr=False)
    similarity_: sp.csr_matrix | None = field(default=None, repr=False)

    def params(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "k": self.k}

    def fit(self, data: InteractionMatrix, batch: int = 2048) -> RP3BetaRecommender:
        x = _binary(data)
        user_item = _row_normalised(x)
        item_user = _row_normalised(x.T.tocsr())
        if self.alpha != 1.0:
            user_item.data **= self.alpha
            item_user.data **= self.alpha
        popularity = np.asarray(x.sum(axis=0)).ravel()
        penalty = np.zeros_like(popularity, dtype=np.float32)
        seen = popularity > 0
        penalty[seen] = popularity[seen] ** -self.beta

        def weigh(walk: np.ndarray, start: int) -> None:
            walk *= penalty[None, :]

        self.x_ = x
        self.similarity_ = _item_item_top(item_user, user_item, self.k, weigh, batch)
        return self


@dataclass
class ShrunkCosineRecommender(_SparseItemItem):
    """Item-KNN by cosine with shrinkage, ``x_i·x_j / (|x_i| |x_j| + shrink)`` on the confidence
    weights, so that two items bought together by two customers are not as similar as two bought
    together by two hundred (implicit's cosine has no shrinkage term)."""

    k: int = 100
    shrink: float = 10.0
    name: str = "item_knn_shrunk"
    x_: sp.csr_matrix | None = field(default=None, repr=False)
    similarity_: sp.csr_matrix | None = field(default=None, repr=False)

    def params(self) -> dict:
        return {"k": self.k, "shrink": self.shrink}

    def fit(self, data: InteractionMatrix, batch: int = 2048) -> ShrunkCosineRecommender:
        # On the confidence weights, as implicit's cosine: on 0/1 interactions the same model
        # lost a quarter of its NDCG on the synthetic shop (views and carts carry taste).
        x = data.weights.tocsr().astype(np.float32)
        x.data = np.clip(x.data, 0, None)
        x.eliminate_zeros()
        item_user = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()).astype(np.float32)
        norms[norms == 0] = 1.0  # an item nobody bought shares nothing: 0, not 0/0

        def weigh(co: np.ndarray, start: int) -> None:
            co /= norms[start : start + len(co), None] * norms[None, :] + self.shrink

        self.x_ = x
        self.similarity_ = _item_item_top(item_user, x, self.k, weigh, batch)
        return self


def _item_item_top(left, right, k: int, weigh, batch: int) -> sp.csr_matrix:
    """``left @ right`` (items × items) block by block, each block weighed in place by
    ``weigh(block, first_row)``, its diagonal dropped and each row's ``k`` strongest kept: the
    full product is dense for popular items, the kept one is not."""
    blocks = []
    for start in range(0, left.shape[0], batch):
        block = (left[start : start + batch] @ right).toarray()
        weigh(block, start)
        np.fill_diagonal(block[:, start : start + batch], 0.0)
        blocks.append(keep_top(block, k))
    return sp.vstack(blocks).tocsr()


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.diags(1.0 / sums).astype(np.float32) @ matrix
