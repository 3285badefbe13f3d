"""Choose the number of segments.

Each candidate k is fitted and scored by silhouette (computed on a fixed-size sample, so the cost
does not grow quadratically with customers), Davies-Bouldin, Calinski-Harabasz and inertia (the
elbow). The rule: the highest silhouette, among candidates whose smallest cluster holds at least
``min_share`` of customers, so that a tiny cluster of outliers never wins on silhouette alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

MINIBATCH_THRESHOLD = 200_000


@dataclass
class KMeansSelection:
    """The chosen model and the scores of every candidate."""

    model: KMeans | MiniBatchKMeans
    labels: np.ndarray
    best_k: int
    candidates: pd.DataFrame


def _fit(x: np.ndarray, k: int, random_state: int) -> KMeans | MiniBatchKMeans:
    if len(x) > MINIBATCH_THRESHOLD:
        return MiniBatchKMeans(
            n_clusters=k, random_state=random_state, n_init=3, batch_size=4096
        ).fit(x)
    return KMeans(n_clusters=k, random_state=random_state, n_init=4).fit(x)


def select_kmeans(
    x: np.ndarray,
    k_values: range | list[int] = range(2, 11),
    *,
    random_state: int = 42,
    sample_size: int = 10_000,
    min_share: float = 0.02,
) -> KMeansSelection:
    """Fit K-Means for each k and keep the best by silhouette (see the module docstring).

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Scaled features.
    k_values : iterable of int
        Candidate numbers of clusters; values ≥ n_samples are skipped.
    random_state : int
        Seed for K-Means and the silhouette sample.
    sample_size : int
        Customers used for the silhouette and Davies-Bouldin scores.
    min_share : float
        Smallest share a cluster may hold for its k to be eligible.

    Returns
    -------
    KMeansSelection
    """
    ks = [k for k in k_values if 2 <= k < len(x)]
    if not ks:
        raise ValueError(f"need more than 2 customers to cluster, got {len(x)}")
    rng = np.random.default_rng(random_state)
    sample = rng.choice(len(x), size=min(sample_size, len(x)), replace=False)
    rows, models = [], {}
    for k in ks:
        model = _fit(x, k, random_state)
        labels = model.predict(x) if isinstance(model, MiniBatchKMeans) else model.labels_
        sample_labels = labels[sample]
        n_distinct = len(np.unique(sample_labels))
        ok = 1 < n_distinct < len(sample)
        sizes = np.bincount(labels, minlength=k)
        rows.append(
            {
                "k": k,
                "silhouette": silhouette_score(x[sample], sample_labels) if ok else float("nan"),
                "davies_bouldin": davies_bouldin_score(x[sample], sample_labels)
                if ok
                else float("nan"),
                "calinski_harabasz": calinski_harabasz_score(x[sample], sample_labels)
                if ok
                else float("nan"),
                "inertia": float(model.inertia_),
                "min_share": float(sizes.min() / len(x)),
            }
        )
        models[k] = (model, labels)
    candidates = pd.DataFrame(rows)
    eligible = candidates[(candidates["min_share"] >= min_share) & candidates["silhouette"].notna()]
    pool = eligible if len(eligible) else candidates.fillna({"silhouette": -1.0})
    best_k = int(pool.sort_values(["silhouette", "k"], ascending=[False, True]).iloc[0]["k"])
    candidates["chosen"] = candidates["k"] == best_k
    model, labels = models[best_k]
    return KMeansSelection(
        model=model, labels=np.asarray(labels), best_k=best_k, candidates=candidates
    )
