"""Segments as the leaves of a regression tree of next-period spend.

Clustering finds groups that look alike; a marketer wants groups that will *do* alike. A
regression tree with at most ``k`` leaves, learnt at the holdout cut from the customers' features
to the log spend of the period that followed, is the classic segmentation-by-tree: every leaf is a
rule ("last ordered within 30 days and 5+ orders") that a marketer can read and SQL can apply,
and the leaves are chosen to separate what customers spent next. Today's customers go to the leaf
whose rule they satisfy, so a customer moves only when their own figures cross a threshold.

Its forecast power is measured on customers the tree was not fitted on (two-fold cross-fitting
on the holdout snapshot), because a tree fitted on the target would otherwise flatter itself.
The rules are fitted on the features' own units (a tree does not care about scaling), so their
thresholds read as days, orders and money.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.tree import DecisionTreeRegressor

from seg_pipeline.lib.segmentation.forecast import forecast_power

# A condition: (feature, "<=" or ">", threshold). A rule: the conditions of one leaf.
Condition = tuple[str, str, float]


def fit_tree(
    values: np.ndarray, y: np.ndarray, k: int, *, min_share: float, random_state: int
) -> DecisionTreeRegressor:
    """A tree of at most ``k`` leaves, none smaller than ``min_share`` of the customers it learns
    from."""
    return DecisionTreeRegressor(
        max_leaf_nodes=k,
        min_samples_leaf=max(5, int(np.ceil(min_share * len(values)))),
        random_state=random_state,
    ).fit(values, y)


def leaf_rules(tree: DecisionTreeRegressor, features: tuple[str, ...]) -> list[list[Condition]]:
    """Each leaf's conditions, simplified to the tightest bound per feature and direction, in
    the order of ``tree.apply``'s leaf ids."""
    t = tree.tree_
    rules: dict[int, list[Condition]] = {}

    def walk(node: int, path: list[Condition]) -> None:
        if t.children_left[node] == t.children_right[node]:
            rules[node] = _simplify(path)
            return
        name, threshold = features[t.feature[node]], float(t.threshold[node])
        walk(t.children_left[node], [*path, (name, "<=", threshold)])
        walk(t.children_right[node], [*path, (name, ">", threshold)])

    walk(0, [])
    return [rules[leaf] for leaf in sorted(rules)]


def _simplify(path: list[Condition]) -> list[Condition]:
    bounds: dict[tuple[str, str], float] = {}
    for name, op, threshold in path:
        key = (name, op)
        tighter = min if op == "<=" else max
        bounds[key] = tighter(bounds.get(key, threshold), threshold)
    return [(name, op, threshold) for (name, op), threshold in bounds.items()]


def apply_rules(
    values: pd.DataFrame, rules: list[list[Condition]], *, strict: bool = True
) -> np.ndarray:
    """The index of the rule each row satisfies. The rules of all a tree's leaves partition the
    feature space, so exactly one; with some leaves dropped (a kept model keeps the leaves that
    had customers), ``strict=False`` gives -1 to a row that satisfies none."""
    out = np.full(len(values), -1, dtype=np.int64)
    for i, rule in enumerate(rules):
        match = np.ones(len(values), dtype=bool)
        for name, op, threshold in rule:
            column = values[name].to_numpy(dtype=float)
            match &= column <= threshold if op == "<=" else column > threshold
        out[match & (out < 0)] = i
    if strict and (out < 0).any():
        raise ValueError(f"{int((out < 0).sum())} rows satisfy no rule: the rules are not a tree's")
    return out


def cross_fitted_power(
    values: np.ndarray, y: np.ndarray, k: int, *, min_share: float, random_state: int
) -> tuple[float, float]:
    """(eta², omega²) of ``y`` across the leaves, each half's leaves from a tree fitted on the
    other half."""
    rng = np.random.default_rng(random_state)
    fold = rng.permutation(len(values)) % 2 == 0
    labels = np.empty(len(values), dtype=np.int64)
    for part in (fold, ~fold):
        tree = fit_tree(values[~part], y[~part], k, min_share=min_share, random_state=random_state)
        # Leaf ids of the two halves' trees must not collide.
        labels[part] = tree.apply(values[part]) + (0 if part is fold else 1_000_000)
    return forecast_power(labels, y)


_PHRASES = {
    "recency_days": ("last ordered within {t:.0f} days", "last ordered over {t:.0f} days ago"),
    "frequency": ("at most {t:.0f} orders", "{u:.0f}+ orders"),
    "monetary": ("spent up to {m}", "spent over {m}"),
    "tenure_days": ("a customer for up to {t:.0f} days", "a customer for over {t:.0f} days"),
    "avg_order_value": ("orders worth up to {m} on average", "orders worth over {m} on average"),
    "interpurchase_days_filled": (
        "orders every {t:.0f} days or more often",
        "orders less often than every {t:.0f} days",
    ),
    "return_rate": ("returns at most {p} of purchases", "returns over {p} of purchases"),
    "n_categories": ("buys from at most {t:.0f} categories", "buys from {u:.0f}+ categories"),
    "top_category_share": ("spreads purchases over categories", "mostly buys one category"),
    "activity_trend": ("ordering less than before", "ordering more than before"),
}


_SINGLE = {"frequency": "one order", "n_categories": "buys from one category"}
_RANGES = {
    "recency_days": "last ordered {lo:.0f} to {hi:.0f} days ago",
    "frequency": "{lo:.0f} to {hi:.0f} orders",
    "monetary": "spent {mlo} to {mhi}",
    "tenure_days": "a customer for {lo:.0f} to {hi:.0f} days",
    "avg_order_value": "orders worth {mlo} to {mhi} on average",
}


def describe(rule: list[Condition], currency: str = "") -> str:
    """A rule in words: "last ordered within 30 days and 5+ orders" (or "all customers").

    Thresholds fall between whole days and orders (a tree splits halfway between two values):
    "<= 30.5" reads "within 30 days", "> 4.5" reads "5+ orders"."""
    if not rule:
        return "all customers"
    bounds: dict[str, dict[str, float]] = {}
    for name, op, threshold in rule:
        bounds.setdefault(name, {})[op] = threshold
    parts = []
    for name in sorted(bounds, key=list(_PHRASES).index):
        low, high = _PHRASES[name]
        below, above = bounds[name].get("<="), bounds[name].get(">")
        if below is not None and above is not None and name in _RANGES:
            parts.append(
                _RANGES[name].format(
                    lo=np.floor(above) + 1,
                    hi=np.floor(below),
                    mlo=f"{currency}{above:,.0f}",
                    mhi=f"{currency}{below:,.0f}",
                )
            )
            continue
        for op, threshold in bounds[name].items():
            if op == "<=" and name in _SINGLE and np.floor(threshold) <= 1:
                parts.append(_SINGLE[name])  # counts start at 1: "at most 1 orders" is one
                continue
            parts.append(
                (low if op == "<=" else high).format(
                    t=np.floor(threshold),
                    u=np.floor(threshold) + 1,
                    m=f"{currency}{threshold:,.0f}",
                    p=f"{threshold:.0%}",
                )
            )
    return " and ".join(parts)


class RuleSegmenter(BaseEstimator):
    """Raw features in, segment id out, by the rules of a tree's leaves: the registered model of
    a tree segmentation (a nearest-centroid model would not give the segments the rules give)."""

    def __init__(self, features=(), rules=(), segment_ids=()):
        self.features = features
        self.rules = rules
        self.segment_ids = segment_ids

    def fit(self, X=None, y=None):
        return self

    def predict(self, X) -> np.ndarray:
        frame = pd.DataFrame(np.asarray(X, dtype=float), columns=list(self.features))
        rules = [[tuple(c) for c in rule] for rule in self.rules]
        return np.asarray(self.segment_ids, dtype=object)[apply_rules(frame, rules)]


def rule_name(rule: list[Condition], currency: str = "") -> str:
    """A tree segment's name: its rule, capitalised."""
    text = describe(rule, currency)
    return text[:1].upper() + text[1:]
