"""Why each customer is in their segment, in a few words a marketer can repeat.

For a tree segment it is the rule the customer satisfies. For a cluster it is the two features
that place the customer nearer their own segment's centre than the runner-up segment's: the
terms of the squared distance in which the own centre wins by most. The text depends only on the
runner-up and the two features, so a million customers share a few hundred strings.
"""

from __future__ import annotations

import numpy as np

FEATURE_WORDS = {
    "recency_days": "recency",
    "frequency": "number of orders",
    "monetary": "spend",
    "tenure_days": "tenure",
    "avg_order_value": "order value",
    "interpurchase_days_filled": "time between orders",
    "return_rate": "returns",
    "n_categories": "categories bought",
    "top_category_share": "category focus",
    "activity_trend": "activity trend",
}


def centroid_reasons(
    x: np.ndarray,
    centroids: np.ndarray,
    labels: np.ndarray,
    features: tuple[str, ...],
    segment_ids: dict,
    batch: int = 65536,
) -> np.ndarray:
    """Each customer's reason: the two features that favour their segment over the next
    nearest one (``segment_ids`` maps a label to its id)."""
    k, n, f = len(centroids), len(x), len(features)
    if k < 2:
        return np.full(n, "the only segment", dtype=object)
    code = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch):
        block, own = x[start : start + batch], labels[start : start + batch]
        distance = ((block[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        distance[np.arange(len(block)), own] = np.inf
        runner = distance.argmin(axis=1)
        margin = (block - centroids[runner]) ** 2 - (block - centroids[own]) ** 2
        top = np.argsort(-margin, axis=1)[:, :2] if f > 1 else np.zeros((len(block), 2), int)
        code[start : start + batch] = (runner * f + top[:, 0]) * f + top[:, 1]
    # One string per (runner-up, first feature, second feature), shared by its customers.
    uniques, inverse = np.unique(code, return_inverse=True)
    texts = []
    for c in uniques:
        rest, second = divmod(int(c), f)
        other, first = divmod(rest, f)
        words = dict.fromkeys(FEATURE_WORDS.get(features[i], features[i]) for i in (first, second))
        texts.append(f"nearer this segment than {segment_ids[other]} on {' and '.join(words)}")
    return np.asarray(texts, dtype=object)[inverse.ravel()]


def rule_reasons(labels: np.ndarray, rule_texts: dict) -> np.ndarray:
    """Each customer's reason: the rule of their segment (``rule_texts`` by label)."""
    lookup = np.empty(max(rule_texts) + 1, dtype=object)
    for label, text in rule_texts.items():
        lookup[label] = f"rule: {text}"
    return lookup[labels]
