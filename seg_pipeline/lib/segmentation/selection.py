"""Fit segmentation candidates and choose one by a documented rule.

Methods: K-Means (MiniBatchKMeans above ``MINIBATCH_THRESHOLD`` customers), Gaussian mixture,
agglomerative clustering (ward, complete, average or single linkage) and HDBSCAN. Agglomerative
and HDBSCAN are fitted on a sample and every customer is then assigned to the nearest segment
centroid, so cost stays bounded as customers grow; HDBSCAN's noise points are assigned the same
way and counted (``noise_share``).

Each candidate is scored on internal quality (silhouette and Davies-Bouldin on a sample,
Calinski-Harabasz, inertia for the elbow, BIC for mixtures) and, when a forecast target is given,
on usefulness: omega squared of next-period log spend across segments (see ``forecast.py``).

The rule (``choose``): drop candidates with more than ``max_segments`` segments or a segment
smaller than ``min_share`` (for a tree: on the customers it learnt from); keep the clusterings
whose silhouette is within ``silhouette_tolerance`` of the best in the same feature space, and
every tree (``contenders``); among them take the highest forecast omega squared (the highest
silhouette when there is no forecast), and the fewer segments on a tie. Forecast power is
measured for the contenders only (for a tree, cross-fitted when it is fitted).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster
from scipy.cluster.hierarchy import linkage as scipy_linkage
from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    pairwise_distances,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture

from seg_pipeline.lib.segmentation.tree import (
    apply_rules,
    cross_fitted_power,
    fit_tree,
    leaf_rules,
)

MINIBATCH_THRESHOLD = 200_000
METHODS = ("kmeans", "gmm", "agglomerative", "hdbscan", "tree")
# Methods that learn from next-period spend: judged on forecast power alone (see ``contenders``).
SUPERVISED = ("tree",)
LINKAGES = ("ward", "complete", "average", "single")
# Linkage trees by (sample content, linkage) and the silhouette sample's distance matrix by sample
# content. Every candidate of a feature space shares them, and building them is the costly part;
# a few are kept because the sweep alternates between feature spaces and snapshots.
_CACHE: OrderedDict = OrderedDict()
_CACHE_KEPT = 6
_CACHE_LOCK = threading.Lock()  # candidates are fitted in parallel threads


def _cached(key: tuple, build):
    """``build()`` once per ``key`` while it stays among the ``_CACHE_KEPT`` most recent."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
            while len(_CACHE) > _CACHE_KEPT:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return _CACHE[key]


def _content_key(a: np.ndarray) -> str:
    # Keyed by content: an object id can be reused by a different array.
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


@dataclass
class Candidate:
    """One fitted candidate: labels for every customer and the centroids that assign new ones."""

    method: str
    param: str
    labels: np.ndarray
    centroids: np.ndarray
    metrics: dict = field(default_factory=dict)
    model: object | None = None
    linkage_matrix: np.ndarray | None = None
    rules: list | None = None  # a tree's leaf rules (every leaf, also those nobody reached)

    @property
    def n_segments(self) -> int:
        return len(self.centroids)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Index of the nearest centroid for each row, in batches to bound memory."""
    out = np.empty(len(x), dtype=np.int64)
    c2 = (centroids**2).sum(axis=1)
    for start in range(0, len(x), batch):
        block = x[start : start + batch]
        out[start : start + batch] = np.argmin(c2[None, :] - 2 * block @ centroids.T, axis=1)
    return out


def centroids_of(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids of the non-noise labels, and labels renumbered 0..k-1 (noise stays -1)."""
    kept = np.unique(labels[labels >= 0])
    remap = np.full(labels.max() + 2 if len(labels) else 1, -1)
    remap[kept] = np.arange(len(kept))
    relabelled = np.where(labels >= 0, remap[np.clip(labels, 0, None)], -1)
    return np.vstack([x[relabelled == i].mean(axis=0) for i in range(len(kept))]), relabelled


def assign_to(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row to its nearest centroid: the centroids that received rows, and labels into
    them (renumbered 0..k-1)."""
    labels = nearest_centroid(x, centroids)
    kept = np.unique(labels)
    remap = np.full(len(centroids), -1)
    remap[kept] = np.arange(len(kept))
    return centroids[kept], remap[labels]


def _score(x, labels, centroids, sample, model=None) -> dict:
    k = len(centroids)
    sizes = np.bincount(labels, minlength=k)
    sub, s_labels = x[sample], labels[sample]
    nan = float("nan")
    metrics = {"silhouette": nan, "davies_bouldin": nan, "calinski_harabasz": nan}
    if 1 < len(np.unique(s_labels)) < len(sample):
        # The sample's distances are shared by every candidate in the space: computed once.
        distances = _cached(("distances", _content_key(sub)), lambda: pairwise_distances(sub))
        metrics = {
            "silhouette": float(silhouette_score(distances, s_labels, metric="precomputed")),
            "davies_bouldin": float(davies_bouldin_score(sub, s_labels)),
            "calinski_harabasz": float(calinski_harabasz_score(sub, s_labels)),
        }
    metrics = {
        "n_segments": k,
        **metrics,
        "inertia": float(((x - centroids[labels]) ** 2).sum()),
        "min_share": float(sizes.min() / len(x)) if k else 0.0,
        "max_share": float(sizes.max() / len(x)) if k else 0.0,
    }
    if isinstance(model, GaussianMixture):
        metrics["bic"] = float(model.bic(sub))
    return metrics


def fit_candidate(
    x: np.ndarray,
    method: str,
    param: int | str,
    *,
    random_state: int = 42,
    sample_size: int = 3_000,
    fit_sample_size: int = 5_000,
    linkage: str = "ward",
    score: bool = True,
    supervision: TreeInputs | None = None,
) -> Candidate:
    """Fit one candidate (``param`` is k, or HDBSCAN's ``min_cluster_size``).

    ``score=False`` skips the quality metrics (silhouette is the costly one), for fits whose
    labels are all that is used, such as the holdout fits behind the forecast measure. A tree
    needs ``supervision``: it learns from the holdout snapshot and assigns ``x``'s customers by
    its rules; its forecast power is cross-fitted (``tree.cross_fitted_power``).
    """
    rng = np.random.default_rng(random_state)
    sample = rng.choice(len(x), size=min(sample_size, len(x)), replace=False)
    fit_idx = rng.choice(len(x), size=min(fit_sample_size, len(x)), replace=False)
    model, link, rules, forecast = None, None, None, {}
    if method == "kmeans":
        k = int(param)
        if len(x) > MINIBATCH_THRESHOLD:
            model = MiniBatchKMeans(
                n_clusters=k, random_state=random_state, n_init=3, batch_size=4096
            ).fit(x)
        else:
            model = KMeans(n_clusters=k, random_state=random_state, n_init=4).fit(x)
        centroids = model.cluster_centers_
        labels = nearest_centroid(x, centroids)
        label = f"k={k}"
    elif method == "gmm":
        k = int(param)
        gmm_idx = rng.choice(len(x), size=min(2 * fit_sample_size, len(x)), replace=False)
        model = GaussianMixture(
            n_components=k, covariance_type="full", random_state=random_state, n_init=1
        ).fit(x[gmm_idx])
        labels = model.predict(x)
        centroids, labels = centroids_of(x, labels)
        label = f"k={k}"
    elif method == "agglomerative":
        k = int(param)
        sub = x[fit_idx]
        # One tree per (data, linkage) serves every k: cutting it is cheap, building it is not.
        link = _cached(
            ("tree", _content_key(sub), linkage), lambda: scipy_linkage(sub, method=linkage)
        )
        sub_labels = fcluster(link, t=k, criterion="maxclust") - 1
        centroids, _ = centroids_of(sub, sub_labels)
        labels = nearest_centroid(x, centroids)
        label = f"{linkage},k={k}"
    elif method == "hdbscan":
        size = int(param)
        sub = x[fit_idx]
        model = HDBSCAN(min_cluster_size=size, min_samples=max(5, size // 5), copy=True).fit(sub)
        if (model.labels_ >= 0).sum() == 0:
            raise ValueError(f"HDBSCAN(min_cluster_size={size}) found no cluster")
        centroids, sub_labels = centroids_of(sub, model.labels_)
        labels = nearest_centroid(x, centroids)
        label = f"min_cluster_size={size}"
        noise_share = float((sub_labels < 0).mean())
    elif method == "tree":
        k, sup = int(param), supervision
        if sup is None:
            raise ValueError("no holdout spend to learn a tree from")
        tree = fit_tree(
            sup.hold_values, sup.y, k, min_share=sup.min_share, random_state=random_state
        )
        rules = leaf_rules(tree, sup.features)
        labels = apply_rules(pd.DataFrame(sup.values, columns=list(sup.features)), rules)
        eta2, omega2 = cross_fitted_power(
            sup.hold_values, sup.y, k, min_share=sup.min_share, random_state=random_state
        )
        leaf_sizes = np.unique(tree.apply(sup.hold_values), return_counts=True)[1]
        forecast = {
            "forecast_eta2": eta2,
            "forecast_omega2": omega2,
            "fit_min_share": float(leaf_sizes.min() / len(sup.hold_values)),
        }
        label = f"k={k}"
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    centroids, labels = centroids_of(x, labels)
    metrics = _score(x, labels, centroids, sample, model) if score else {}
    if method == "hdbscan":
        metrics["noise_share"] = noise_share
    return Candidate(
        method=method,
        param=label,
        labels=labels,
        centroids=centroids,
        metrics={**metrics, **forecast},
        model=model,
        linkage_matrix=link,
        rules=rules,
    )


@dataclass
class TreeInputs:
    """What a tree learns from: the holdout customers' features in their own units and their
    log next-period spend, and today's customers' features to assign by its rules."""

    features: tuple[str, ...]
    values: np.ndarray
    hold_values: np.ndarray
    y: np.ndarray
    min_share: float


def candidate_params(method: str, k_values: range, n: int) -> list[int]:
    """The sweep for a method: k for most, ``min_cluster_size`` for HDBSCAN."""
    if method == "hdbscan":
        return sorted({max(10, int(n * s)) for s in (0.01, 0.02, 0.05, 0.1)})
    return [k for k in k_values if 2 <= k < n]


def contenders(
    table: pd.DataFrame,
    *,
    max_segments: int = 10,
    min_share: float = 0.02,
    silhouette_tolerance: float = 0.1,
) -> pd.DataFrame:
    """The rows of ``table`` that compete on forecast power (see the module docstring).

    Only these need the holdout fit behind the forecast measure: on the 10M-event benchmark
    26 of 48 candidates, and 4 of the 16 Gaussian mixtures, whose fits cost the most.
    """
    pool = table[(table["n_segments"] <= max_segments) & (table["n_segments"] >= 2)]
    # A tree guarantees its leaves' size on the customers it learnt from (the holdout); today's
    # customers spread a little differently over the same rules, so its smallest leaf today can
    # fall just under the limit although the rule is sound: trees are held to the fit's sizes.
    share = pool["min_share"]
    if "fit_min_share" in pool:
        share = pool["fit_min_share"].fillna(share)
    eligible = pool[share >= min_share]
    if len(eligible) == 0:
        eligible = pool if len(pool) else table
    # A tree's leaves are rules, not compact clusters: the silhouette tolerance (which keeps
    # clusterings that are not clusters out) does not apply to them; forecast power judges them.
    supervised = (
        eligible["method"].isin(SUPERVISED)
        if "method" in eligible
        else pd.Series(False, index=eligible.index)
    )
    clusters = eligible[~supervised]
    clusters = (
        clusters[clusters["silhouette"].notna()]
        if clusters["silhouette"].notna().any()
        else clusters
    )
    # Silhouettes are only comparable within one feature space: the tolerance applies per space.
    group = (
        clusters["features"] if "features" in clusters else pd.Series("all", index=clusters.index)
    )
    best = clusters.groupby(group)["silhouette"].transform("max")
    close = clusters[clusters["silhouette"] >= best - silhouette_tolerance]
    return eligible.loc[sorted([*close.index, *eligible.index[supervised]])]


def choose(
    table: pd.DataFrame,
    *,
    max_segments: int = 10,
    min_share: float = 0.02,
    silhouette_tolerance: float = 0.1,
    incumbent: dict | None = None,
    margin: float = 0.01,
) -> int:
    """Row index of the chosen candidate in ``table`` (see the module docstring for the rule).

    ``incumbent`` (yesterday's ``features``/``method``/``param``) is kept while it still passes
    the filters and no candidate beats it by more than ``margin``: segments should not change
    shape from night to night for a gain within noise.
    """
    close = contenders(
        table,
        max_segments=max_segments,
        min_share=min_share,
        silhouette_tolerance=silhouette_tolerance,
    )
    target = (
        "forecast_omega2"
        if "forecast_omega2" in close and close["forecast_omega2"].notna().any()
        else "silhouette"
    )
    ordered = close.sort_values([target, "n_segments"], ascending=[False, True])
    if incumbent:
        same = close
        for key, value in incumbent.items():
            if key in close:
                same = same[same[key] == value]
        if len(same) and ordered.iloc[0][target] - same.iloc[0][target] <= margin:
            return int(same.index[0])
    return int(ordered.index[0])
