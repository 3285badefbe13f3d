"""Offline evaluation on a time split, and the choice of the champion.

Every candidate is fitted on the history before the split and asked for its top-k for each
customer; the held-out purchases of new items after the split are the truth. The champion is the
candidate with the best NDCG@k; it is published only if it beats popularity, otherwise popularity
is published (a tuned popularity list is a strong baseline on basket data).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.metrics import beyond_accuracy, ranking_metrics
from seg_pipeline.lib.recommendations.models import Recommender


@dataclass
class Evaluation:
    """Metrics per candidate (one row each) and the champion's name."""

    table: pd.DataFrame
    champion: str


def evaluate(
    candidates: Sequence[Recommender],
    train: InteractionMatrix,
    relevant: sp.csr_matrix,
    *,
    k: int = 10,
    item_categories: np.ndarray | None = None,
    blocked: np.ndarray | None = None,
    baseline: str = "popularity",
) -> Evaluation:
    """Fit and score each candidate; return their metrics and the champion.

    Parameters
    ----------
    candidates : sequence of Recommender
        Unfitted models with distinct ``name`` values; one must be named ``baseline``.
    train : InteractionMatrix
        History before the split.
    relevant : csr_matrix
        Held-out items per user (same shape as ``train``).
    k : int
        List length.
    item_categories : ndarray of int, optional
        Category code per item column, for the diversity metric.
    blocked : ndarray of int, optional
        Item columns never to recommend (unavailable).
    baseline : str
        Name of the candidate every other must beat.
    """
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    categories = item_categories if item_categories is not None else np.zeros(train.shape[1], int)
    binary = (train.weights > 0).astype(np.float32)
    popularity = np.asarray(binary.sum(axis=0)).ravel() / max(train.shape[0], 1)
    rows = []
    for model in candidates:
        started = time.perf_counter()
        model.fit(train.weights)
        fit_seconds = time.perf_counter() - started
        recs = model.recommend(users, train.purchased, k, blocked=blocked).items
        row = {"model": model.name, "params": model.params(), "fit_seconds": fit_seconds}
        row |= ranking_metrics(recs, relevant[users], k)
        row |= beyond_accuracy(recs, categories, popularity, k)
        rows.append(row)
    table = pd.DataFrame(rows)
    if baseline not in set(table["model"]):
        raise ValueError(f"no candidate is named {baseline!r}")
    best = table.sort_values(["ndcg", "model"], ascending=[False, True]).iloc[0]
    base_ndcg = float(table.loc[table["model"] == baseline, "ndcg"].iloc[0])
    champion = str(best["model"]) if float(best["ndcg"]) > base_ndcg else baseline
    table["is_champion"] = table["model"] == champion
    return Evaluation(table=table, champion=champion)
