"""Audiences, the other direction of a recommender: who should hear about item X, or category C?

A marketer asks "who gets the email about product X?" (Amazon Personalize calls it Item-Affinity
and Item-Attribute-Affinity). The night's champion already scores every customer against every
item; an audience ranks the customers by their score for X (summed over C's items for a category)
and keeps the best ``size``. Item audiences leave out customers who already bought X: they are
prospects, and the evaluation counts first purchases. Category audiences keep them: a category's
regular buyers are its best audience.

The evaluation asks the champion fitted before the validation split for each audience, and counts
how many of the customers who then bought X for the first time (a new item of C, for a category)
were in it, against a baseline of the same size: the customers who had bought the most distinct
items of X's category (of C), ties broken by their whole history. A model-free list a marketer
could pull with SQL, and a strong one on basket data: on the synthetic shop, where customers
keep to favourite categories, it beats the champion's own ranking. So three rankings compete per
kind (``MODES``: the model, the baseline, both standardised and added) and the best on the
validation window is published.

When the champion is a popularity list it scores every customer alike, so the audience is that
baseline, and ``model`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.base import Recommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.popularity import recent_purchases

BASELINE = "past_category_buyers"
KINDS = ("item", "category")


@dataclass(frozen=True)
class AudienceSettings:
    """Which items and categories get an audience, and how large; the Dagster config
    (``AudienceConfig``) mirrors it field for field."""

    size: int = 500
    items: tuple[str, ...] = ()
    top_items: int = 20
    categories: tuple[str, ...] = ()
    top_categories: int = 10
    recent_days: int = 30
    batch_size: int = 65_536


@dataclass
class Audiences:
    """``users[g, r]`` is group ``g``'s rank-``r + 1`` customer (row of the matrix; -1 pads an
    audience shorter than ``size``), ``scores`` its score and ``because`` the history item behind
    it (-1: none). ``groups`` are item columns or category codes."""

    kind: str  # "item" or "category"
    groups: np.ndarray
    users: np.ndarray
    scores: np.ndarray
    because: np.ndarray
    owned: np.ndarray  # distinct items of the group's category the customer bought
    model: str

    def long(self) -> pd.DataFrame:
        """One row per (group, rank, user), ranks from 1, padding left out."""
        ok = self.users >= 0
        return pd.DataFrame(
            {
                "group": np.broadcast_to(self.groups[:, None], ok.shape)[ok],
                "rank": np.cumsum(ok, axis=1)[ok],
                "u": self.users[ok],
                "score": self.scores[ok].astype(float),
                "because": self.because[ok],
                "owned": self.owned[ok],
            }
        )


def personalised(model: Recommender) -> bool:
    """Whether the model ranks customers differently for an item (popularity lists do not)."""
    return model.reason not in ("popular", "segment")


def target_items(data: InteractionMatrix, settings: AudienceSettings) -> np.ndarray:
    """The configured items that the matrix knows, else the ``top_items`` bought by the most
    customers in the last ``recent_days``; item columns."""
    if settings.items:
        return np.flatnonzero(np.isin(data.item_ids, np.asarray(settings.items, dtype=object)))
    sales = _recent_buyers(data, settings.recent_days)
    ranked = np.lexsort((np.arange(len(sales)), -sales))
    return np.sort(ranked[: settings.top_items][sales[ranked[: settings.top_items]] > 0])


def target_categories(data: InteractionMatrix, settings: AudienceSettings) -> np.ndarray:
    """The configured categories that the catalogue has, else the ``top_categories`` with the
    most recent buyers of their items; category codes (none when items have no category)."""
    names = data.category_names if data.category_names is not None else np.array([], object)
    if settings.categories:
        return np.flatnonzero(np.isin(names, np.asarray(settings.categories, dtype=object)))
    codes = data.item_categories
    if codes is None or len(names) == 0:
        return np.array([], dtype=np.int64)
    known = codes >= 0
    sales = np.bincount(
        codes[known], _recent_buyers(data, settings.recent_days)[known], minlength=len(names)
    )
    ranked = np.lexsort((np.arange(len(sales)), -sales))[: settings.top_categories]
    return np.sort(ranked[sales[ranked] > 0])


def _recent_buyers(data: InteractionMatrix, days: int) -> np.ndarray:
    """Customers who bought each item in the last ``days`` (all time when nobody did)."""
    recent = recent_purchases(data, days).multiply(data.purchased).tocsc()
    counts = np.diff(recent.indptr).astype(np.float64)
    if counts.sum() == 0:
        counts = np.diff(data.purchased.tocsc().indptr).astype(np.float64)
    return counts


def group_matrix(data: InteractionMatrix, kind: str, groups: np.ndarray) -> sp.csr_matrix:
    """Items × groups, 1 where the item belongs to the group (the item itself, or its
    category)."""
    n_items = data.shape[1]
    if kind == "item":
        rows, cols = groups, np.arange(len(groups))
    else:
        position = np.full(max(len(data.category_names), 1), -1)
        position[groups] = np.arange(len(groups))
        codes = data.item_categories
        member = np.flatnonzero((codes >= 0) & (position[np.clip(codes, 0, None)] >= 0))
        rows, cols = member, position[codes[member]]
    values = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((values, (rows, cols)), shape=(n_items, len(groups)))


def category_purchases(data: InteractionMatrix, groups: sp.csr_matrix) -> sp.csr_matrix:
    """Users × groups: how many distinct items of each group's categories the user bought."""
    categories = data.item_categories
    if categories is None:
        categories = np.zeros(data.shape[1], dtype=np.int64)
    # Each group's categories: those of its items.
    codes = np.where(categories >= 0, categories, categories.max() + 1)
    item_to_category = sp.csr_matrix(
        (np.ones(len(codes), np.float32), (np.arange(len(codes)), codes))
    )
    group_categories = (item_to_category.T @ groups) > 0
    return (data.purchased.astype(np.float32) @ item_to_category) @ group_categories


# How an audience ranks customers: by the model's score, by the baseline, or by the sum of the
# two standardised (each column's mean 0 and deviation 1 over the customers). Chosen per kind on
# the validation window (``choose_modes``).
MODES = ("model", "blend", "baseline")


def audience_scores(
    model: Recommender,
    data: InteractionMatrix,
    kind: str,
    groups: np.ndarray,
    mode: str,
    *,
    batch_size: int = 65_536,
) -> np.ndarray:
    """Customers × groups scores of one mode (higher: more likely to buy); an item's buyers are
    -inf in item audiences (they are not prospects)."""
    matrix = group_matrix(data, kind, groups)
    n_users = data.shape[0]
    parts = []
    if mode in ("model", "blend"):
        scorer = model.group_scorer(matrix)
        scores = np.empty((n_users, len(groups)), dtype=np.float64)
        for start in range(0, n_users, batch_size):
            users = np.arange(start, min(start + batch_size, n_users))
            scores[users] = scorer(users)
        parts.append(scores)
    if mode in ("baseline", "blend"):
        total = np.diff(data.purchased.indptr).astype(np.float64)
        # The whole history breaks ties: below one category item's worth, scaled into [0, 1).
        tie = total / (total.max() + 1) if n_users else total
        parts.append(category_purchases(data, matrix).toarray() + tie[:, None])
    if mode == "blend":
        parts = [
            (p - p.mean(axis=0)) / np.where(p.std(axis=0) > 0, p.std(axis=0), 1) for p in parts
        ]
    scores = sum(parts)
    if kind == "item":
        bought = (data.purchased.astype(np.float32) @ matrix).toarray() > 0
        scores[bought] = -np.inf
    return scores


def build_audiences(
    model: Recommender,
    data: InteractionMatrix,
    kind: str,
    groups: np.ndarray,
    size: int,
    *,
    mode: str = "model",
    left_out: np.ndarray | None = None,
    batch_size: int = 65_536,
    explain: bool = True,
) -> Audiences:
    """The best ``size`` customers of ``data`` for each group in ``mode``.

    ``left_out`` marks customers (rows) who never enter an audience (opted out). A popularity
    ``model`` scores everyone alike, so it always gives the baseline audiences. ``explain``
    False leaves ``because`` empty (the evaluation needs only who is in).
    """
    if not personalised(model):
        mode = "baseline"
    scores = audience_scores(model, data, kind, groups, mode, batch_size=batch_size)
    if left_out is not None:
        scores[left_out] = -np.inf
    users = np.full((len(groups), size), -1, dtype=np.int64)
    top = np.full((len(groups), size), -np.inf)
    for g in range(len(groups)):
        column = scores[:, g]
        keep = min(size, len(column))
        best = np.argpartition(-column, keep - 1)[:keep] if keep else np.array([], np.int64)
        # Best first, ties to the lower row, so an audience is the same on every machine.
        best = best[np.lexsort((best, -column[best]))]
        best = best[np.isfinite(column[best])]
        users[g, : len(best)], top[g, : len(best)] = best, column[best]
    matrix = group_matrix(data, kind, groups)
    because = (
        _because(model, data, kind, groups, users)
        if mode != "baseline" and explain
        else np.full(users.shape, -1, dtype=np.int64)
    )
    name = (
        BASELINE
        if mode == "baseline"
        else model.name
        if mode == "model"
        else (f"{model.name}+{BASELINE}")
    )
    return Audiences(kind, groups, users, top, because, _owned(data, matrix, users), name)


def tonights_audiences(
    model: Recommender,
    full: InteractionMatrix,
    settings: AudienceSettings,
    modes: dict[str, str],
    left_out: np.ndarray,
) -> tuple[Audiences, Audiences]:
    """The item and the category audiences over every customer of ``full``, each ranked in
    ``modes[kind]`` (the baseline when validation chose none)."""
    targets = {"item": target_items(full, settings), "category": target_categories(full, settings)}
    item, category = (
        build_audiences(
            model,
            full,
            kind,
            targets[kind],
            settings.size,
            mode=modes.get(kind, "baseline"),
            left_out=left_out,
            batch_size=settings.batch_size,
        )
        for kind in KINDS
    )
    return item, category


def _owned(data: InteractionMatrix, matrix: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Distinct items of the group's category each audience member bought (0 for padding)."""
    owned = category_purchases(data, matrix).tocsc()
    out = np.zeros(users.shape, dtype=np.int64)
    for g in range(users.shape[0]):
        members = users[g] >= 0
        column = owned[:, g].toarray().ravel()
        out[g, members] = column[users[g, members]]
    return out


def _because(model, data, kind, groups, users) -> np.ndarray:
    """The history item behind each audience member's score (the model's own explanation of
    recommending the item); category audiences name none."""
    because = np.full(users.shape, -1, dtype=np.int64)
    if kind != "item" or model.reason not in ("because", "similar"):
        return because
    # One call for every (audience, member) pair: a model's explanation may prepare a large
    # item-item table first.
    member = users >= 0
    recs = np.broadcast_to(np.asarray(groups)[:, None], users.shape)[member][:, None]
    if len(recs):
        because[member] = model.explain(recs, data.weights[users[member]])[:, 0]
    return because


def evaluate_audiences(
    model: Recommender,
    train: InteractionMatrix,
    relevant: sp.csr_matrix,
    settings: AudienceSettings,
) -> pd.DataFrame:
    """Hit rates of each mode's audiences (``model`` fitted on ``train``) on the validation
    window: one row per target and mode.

    ``relevant`` holds each training customer's first purchases of items after the split. An
    item's buyers are those customers; a category's, those who bought an item of it new to them.
    ``hits`` counts the buyers who were in the audience of ``size``.
    """
    rows = []
    modes = MODES if personalised(model) else ("baseline",)
    for kind in KINDS:
        groups = (
            target_items(train, settings) if kind == "item" else target_categories(train, settings)
        )
        if len(groups) == 0:
            continue
        buyers = (relevant.astype(np.float32) @ group_matrix(train, kind, groups)).tocsc() > 0
        for mode in modes:
            audiences = build_audiences(
                model, train, kind, groups, settings.size, mode=mode, explain=False
            )
            for g, group in enumerate(groups):
                who = buyers[:, g].nonzero()[0]
                rows.append(
                    {
                        "kind": kind,
                        "target": _group_name(train, kind, group),
                        "mode": mode,
                        "model": audiences.model,
                        "audience_size": settings.size,
                        "buyers": len(who),
                        "hits": int(np.isin(audiences.users[g], who).sum()),
                    }
                )
    columns = ["kind", "target", "mode", "model", "audience_size", "buyers", "hits"]
    return pd.DataFrame(rows, columns=columns)


def hit_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Pooled hit rate per kind and mode (hits over buyers, summed over targets), with the
    baseline's beside it and their ratio (``lift``)."""
    if table.empty:
        return pd.DataFrame(columns=["kind", "mode", "model", "buyers", "hit_rate", "lift"])
    pooled = table.groupby(["kind", "mode"], as_index=False).agg(
        model=("model", "first"), buyers=("buyers", "sum"), hits=("hits", "sum")
    )
    pooled["hit_rate"] = pooled["hits"] / pooled["buyers"].where(pooled["buyers"] > 0)
    base = pooled[pooled["mode"] == "baseline"].set_index("kind")["hit_rate"]
    pooled["baseline_hit_rate"] = pooled["kind"].map(base)
    pooled["lift"] = pooled["hit_rate"] / pooled["baseline_hit_rate"].where(
        pooled["baseline_hit_rate"] > 0
    )
    return pooled


def choose_modes(rates: pd.DataFrame) -> dict[str, str]:
    """Per kind, the mode with the best validation hit rate; ties (and no buyers to tell them
    apart) go to the baseline, then the blend: the simpler list wins when it is as good."""
    chosen = {}
    preference = {"baseline": 0, "blend": 1, "model": 2}
    for kind, rows in rates.groupby("kind"):
        rows = rows.assign(
            order=rows["mode"].map(preference), rate=rows["hit_rate"].fillna(-1.0)
        ).sort_values(["rate", "order"], ascending=[False, True])
        chosen[kind] = rows.iloc[0]["mode"]
    return chosen


def summary(rates: pd.DataFrame, modes: dict[str, str]) -> dict:
    """The chosen mode's validation figures per kind, as logged and shown."""
    out = {}
    for kind, mode in modes.items():
        row = rates[(rates["kind"] == kind) & (rates["mode"] == mode)].iloc[0]
        out |= {
            f"{kind}_audience_mode": mode,
            f"{kind}_audience_hit_rate": float(row["hit_rate"]),
            f"{kind}_audience_baseline_hit_rate": float(row["baseline_hit_rate"]),
            f"{kind}_audience_buyers": int(row["buyers"]),
        }
    return out


def _group_name(data: InteractionMatrix, kind: str, group: int) -> str:
    return str(data.item_ids[group] if kind == "item" else data.category_names[group])
