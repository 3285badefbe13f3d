"""The champion as an MLflow pyfunc model that recommends from a purchase history.

The registered model holds only item-side state (item factors, item-item similarities,
popularity), never a customer id: a caller passes the item ids a customer bought and gets item
ids back. Factor models fold the history in with a ridge solve, like ALS's own user update.
The history carries no dates, so a time-decayed EASE scores it as if every purchase were recent.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.blends import HybridRecommender
from seg_pipeline.lib.recommendations.content import ContentRecommender
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.item_models import (
    EASERecommender,
    RP3BetaRecommender,
    ShrunkCosineRecommender,
)
from seg_pipeline.lib.recommendations.neighbours import ItemKNNRecommender
from seg_pipeline.lib.recommendations.popularity import (
    PopularityRecommender,
    SegmentPopularityRecommender,
)


def _components(model: Recommender) -> list[tuple[Recommender, float]]:
    return model.components if isinstance(model, HybridRecommender) else [(model, 1.0)]


def export_model(model: Recommender, item_ids: np.ndarray, directory: Path) -> Path:
    """Write a fitted model's item-side state to ``directory``; return the manifest path."""
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "item_ids.npy", np.asarray(item_ids, dtype=str))
    manifest = {"name": model.name, "blend": len(_components(model)) > 1, "components": []}
    for i, (part, weight) in enumerate(_components(model)):
        entry = {"weight": weight, "file": f"component_{i}"}
        if isinstance(part, ALSRecommender):  # ALS and BPR
            entry["kind"] = "factors"
            entry["regularization"] = float(part.regularization)
            np.save(directory / f"component_{i}.npy", np.asarray(part.item_vectors))
        elif isinstance(part, ItemKNNRecommender):
            entry["kind"] = "similarity"
            sp.save_npz(directory / f"component_{i}.npz", part.similarity.tocsr())
        elif isinstance(part, RP3BetaRecommender | ShrunkCosineRecommender):
            entry["kind"] = "similarity"
            sp.save_npz(directory / f"component_{i}.npz", part.similarity_)
        elif isinstance(part, EASERecommender):
            entry["kind"] = "dense"
            np.save(directory / f"component_{i}.npy", part.weights_)
        elif isinstance(part, ContentRecommender):
            entry["kind"] = "similarity"
            sp.save_npz(directory / f"component_{i}.npz", part.similarity.T.tocsr())
        elif isinstance(part, PopularityRecommender | SegmentPopularityRecommender):
            entry["kind"] = "popularity"
            vector = (
                part.popularity_ if isinstance(part, PopularityRecommender) else part.table_[-1]
            )
            np.save(directory / f"component_{i}.npy", np.asarray(vector, dtype=np.float32))
        else:
            raise TypeError(f"cannot export {type(part).__name__}")
        manifest["components"].append(entry)
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


class HistoryRecommender(mlflow.pyfunc.PythonModel):
    """pyfunc: input a frame with a ``history`` column (lists of item ids) and optionally ``n``."""

    def load_context(self, context) -> None:
        root = Path(context.artifacts["model_dir"])
        self.manifest = json.loads((root / "manifest.json").read_text())
        self.item_ids = np.load(root / "item_ids.npy")
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.parts = []
        for entry in self.manifest["components"]:
            if entry["kind"] == "similarity":
                array = sp.load_npz(root / f"{entry['file']}.npz").tocsr()
            else:
                array = np.load(root / f"{entry['file']}.npy")
            self.parts.append((entry, array))

    def _scores(self, history: np.ndarray) -> np.ndarray:
        h = np.zeros(len(self.item_ids), dtype=np.float32)
        h[history] = 1.0
        total = np.zeros(len(self.item_ids), dtype=np.float32)
        for entry, array in self.parts:
            if entry["kind"] == "factors":
                v = array
                gram = v.T @ v + entry["regularization"] * np.eye(v.shape[1], dtype=v.dtype)
                user = np.linalg.solve(gram, v[history].sum(axis=0)) if len(history) else 0 * v[0]
                part = v @ user
            elif entry["kind"] == "similarity":
                part = np.asarray((sp.csr_matrix(h) @ array).todense()).ravel()
            elif entry["kind"] == "dense":
                part = h @ array
            else:
                part = array
            top = part.max()
            total += entry["weight"] * (np.clip(part, 0, None) / top if top > 0 else 0)
        return total

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        out = []
        for _, row in model_input.iterrows():
            n = int(row["n"]) if "n" in row and pd.notna(row["n"]) else 10
            history = np.array(
                [self.index[i] for i in row["history"] if i in self.index], dtype=int
            )
            scores = self._scores(history)
            scores[history] = -np.inf
            top = np.argsort(-scores, kind="stable")[:n]
            out.append(list(self.item_ids[top]))
        return pd.DataFrame({"recommendations": out})
