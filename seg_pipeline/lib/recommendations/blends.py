"""Blends: weighted sums of row-normalised scores of fitted models."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix


def row_normalise(scores: np.ndarray) -> np.ndarray:
    """Scale each row to [0, 1] by its maximum, so models on different scales can be blended."""
    top = scores.max(axis=1, keepdims=True)
    return np.where(top > 0, np.clip(scores, 0, None) / np.where(top > 0, top, 1), 0)


@dataclass
class HybridRecommender(Recommender):
    """A weighted blend of row-normalised scores of fitted component models."""

    components: list[tuple[Recommender, float]] = field(default_factory=list)
    name: str = "hybrid"

    def params(self) -> dict:
        blend = " + ".join(f"{w:g}*{m.name}" for m, w in self.components)
        return {"blend": blend, **{m.name: m.params() for m, _ in self.components}}

    def fit(self, data: InteractionMatrix) -> HybridRecommender:
        for model, _ in self.components:
            model.fit(data)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        total = None
        for model, weight in self.components:
            part = weight * row_normalise(np.asarray(model.score(users), dtype=np.float32))
            total = part if total is None else total + part
        return total

    def explain(self, recs: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        because = np.full(recs.shape, -1, dtype=np.int64)
        for model, _ in self.components:
            if model.reason in ("because", "similar"):
                found = model.explain(recs, history)
                because = np.where(because >= 0, because, found)
        return because
