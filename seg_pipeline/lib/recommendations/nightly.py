"""One night of recommendations: the settings, the plan and what both kinds of night share.

A night is one of two kinds (``plan_night``):

* a **refit night** (``refit.refit_night``) evaluates every candidate on a time split (the last
  ``holdout_days`` before as_of), refits the best on all data and scores every customer; when
  the history cannot support that, ``refit.popularity_night`` publishes popularity lists;
* a **rescore night** (``rescore.rescore_night``), between refits, folds each changed customer's
  history into the kept ALS model's item factors (``kept_model.KeptModel``) and scores only them;
  everyone else keeps last night's list, which a re-score would reproduce.

Both score their lists with ``score_lists`` from the inputs read here; writing is
``tables.write_refit_night`` / ``tables.write_rescore_night``, logging is the Dagster side's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.recommendations import audiences as aud
from seg_pipeline.lib.recommendations import diversity as div
from seg_pipeline.lib.recommendations import feedback as fb
from seg_pipeline.lib.recommendations.interactions import (
    InteractionMatrix,
    Weights,
)
from seg_pipeline.lib.recommendations.kept_model import (
    CUSTOMERS_TABLE,
    KeptModel,
    load_model,
)
from seg_pipeline.lib.recommendations.lists import COLD_WINDOW_DAYS, Lists, build_lists
from seg_pipeline.lib.recommendations.new_items import NewItems, NewItemSettings
from seg_pipeline.lib.recommendations.popularity import SegmentPopularityRecommender


class NotEnoughData(ValueError):
    """The history cannot support evaluating recommenders: popularity lists are published."""


@dataclass(frozen=True)
class SimilaritySettings:
    """Item-item similarity (the ``item_similarities`` table)."""

    n: int = 10
    weighting: str = "cosine"
    knn_neighbours: int = 50


@dataclass(frozen=True)
class NightSettings:
    """The recommendation settings; the Dagster config (``RecommendationConfig``) mirrors them
    field for field and documents each."""

    n: int = 10
    holdout_days: int = 30
    search: bool = True
    search_max_customers: int = 50_000
    eval_customers: int = 20_000
    selection_customers: int = 50_000
    pool_scoring_min_customers: int | None = 200_000
    pool_min_recall: float = 0.99
    warm_start_iterations: int | None = 2
    factors: tuple[int, ...] = (64, 128)
    families: tuple[str, ...] = ()
    max_per_category: int | None = 4
    repeatable_items: tuple[str, ...] = ()
    random_state: int = 42
    retrain_every_days: int = 7
    rescore_all: bool = False
    weights: Weights = field(default_factory=Weights)
    similarity: SimilaritySettings = field(default_factory=SimilaritySettings)
    audiences: aud.AudienceSettings = field(default_factory=aud.AudienceSettings)
    diversity: float | None = None
    diversity_max_ndcg_cost: float = 0.02
    feedback: fb.FeedbackSettings = field(default_factory=fb.FeedbackSettings)
    new_items: NewItemSettings = field(default_factory=NewItemSettings)
    # An engine's own candidates (the Spark engine: MLlib ALS): called with whether tonight
    # searches the full grid (True) or compares the short list for large data (False).
    extra_candidates: Callable[[bool], list] | None = None


@dataclass
class NightPlan:
    """Which kind of night tonight is: ``why`` names the reason to refit (None: rescore).
    ``settings_hash`` identifies the settings, kept with a refitted model."""

    as_of: date
    kept: KeptModel | None
    why: str | None
    settings_hash: str


def plan_night(
    con: duckdb.DuckDBPyConnection, settings_hash: str, retrain_every_days: int
) -> NightPlan:
    """Refit when there is no usable kept model, its lists are missing, the settings changed
    (``settings_hash``) or it is ``retrain_every_days`` old; else rescore."""
    as_of = tonight_as_of(con)
    kept = load_model(con)
    lists_kept = con.execute(
        "select count(*) = 2 from information_schema.tables where table_name in "
        "('customer_recommendations', $fingerprints)",
        {"fingerprints": CUSTOMERS_TABLE},
    ).fetchall()[0][0]
    if kept is None:
        why = "no kept model"
    elif not lists_kept:
        why = "the kept model's lists are missing"
    else:
        why = kept.retrain_reason(as_of, settings_hash, retrain_every_days)
    return NightPlan(as_of=as_of, kept=kept, why=why, settings_hash=settings_hash)


def tonight_as_of(con: duckdb.DuckDBPyConnection) -> date:
    """Tonight's as_of (from the ingest manifest)."""
    return con.execute("select as_of from ingest_manifest").fetchall()[0][0]


def choose_split(con: duckdb.DuckDBPyConnection, as_of: date, holdout_days: int) -> date:
    """The validation window is the last ``holdout_days``; on a short history, the last 20%.

    When the fixed window would leave less than half of the purchase history for training, the
    split moves to the day by which 80% of purchase rows had happened.
    """
    split = as_of - timedelta(days=holdout_days)
    share_before, p80 = con.execute(
        """
        select avg((event_date < $split)::int), quantile_disc(event_date, 0.8)
        from int_customer_item_daily where n_orders > 0
        """,
        {"split": split},
    ).fetchall()[0]
    if share_before is None:
        raise ValueError("no purchases by known customers: nothing to recommend from")
    return split if share_before >= 0.5 else p80


def available_items(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Each catalogue item's availability, in the matrix's column order (item_id order)."""
    flags = con.execute("select available from item_catalog order by item_id").fetchnumpy()
    return np.asarray(flags["available"], dtype=bool)


def score_lists(
    champion,
    data: InteractionMatrix,
    full: InteractionMatrix,
    settings: NightSettings,
    blocked,
    diversity: float = 0.0,
    demoted: sp.csr_matrix | None = None,
    new_items: NewItems | None = None,
) -> Lists:
    """``build_lists`` for the customers of ``data``, with the popularity, item support and
    similarity vectors of ``full`` (everyone): the same inputs on a refit night and on the
    nights between, so a customer's list does not depend on who else is scored tonight."""
    vectors = div.similarity_vectors(champion, full.purchased) if diversity > 0 else None
    repeatable = np.isin(full.item_ids, np.asarray(settings.repeatable_items, dtype=object))
    return build_lists(
        champion,
        data,
        settings.n,
        blocked=blocked,
        repeatable=np.flatnonzero(repeatable),
        max_per_category=settings.max_per_category,
        fallback=SegmentPopularityRecommender(window_days=COLD_WINDOW_DAYS).fit(full),
        item_support=getattr(champion, "item_support_", None),
        diversity=diversity,
        similarity_vectors=vectors,
        demoted=demoted,
        new_items=new_items,
    )


def scoring_figures(scoring: dict | None) -> dict:
    """How the champion scored every item (exact, or a candidate pool and its recall), with
    keys prefixed ``scoring_`` once."""
    return {k if k.startswith("scoring") else f"scoring_{k}": v for k, v in (scoring or {}).items()}
