"""One night of recommendations: where a list is scored.

A night is one of two kinds (``plan_night``):

* a **refit night** (``refit_night``) evaluates every candidate on a time split (the last
  ``holdout_days`` before as_of), refits the best on all data and scores every customer;
* a **rescore night** (``rescore_night``), between refits, folds each changed customer's history
  into the kept ALS model's item factors (``kept_model.KeptModel``) and scores only them; everyone
  else keeps last night's list, which a re-score would reproduce.

Both return the lists and what to write and log; writing is ``tables.write_refit_night`` /
``tables.write_rescore_night``, logging is the Dagster side's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from seg_pipeline.lib.recommendations import audiences as aud
from seg_pipeline.lib.recommendations import diversity as div
from seg_pipeline.lib.recommendations import feedback as fb
from seg_pipeline.lib.recommendations.evaluation import Evaluation, default_grid, evaluate
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.interactions import (
    InteractionMatrix,
    Weights,
    load_heldout_purchases,
    load_interactions,
)
from seg_pipeline.lib.recommendations.kept_model import (
    CUSTOMERS_TABLE,
    KeptModel,
    catalogue_signature,
    changed_customers,
    load_model,
    row_fingerprints,
)
from seg_pipeline.lib.recommendations.lists import COLD_WINDOW_DAYS, Lists, build_lists
from seg_pipeline.lib.recommendations.new_items import NewItems, NewItemSettings, new_item_columns
from seg_pipeline.lib.recommendations.popularity import SegmentPopularityRecommender
from seg_pipeline.lib.timing import PhaseTimer


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


def tonights_new_items(
    con: duckdb.DuckDBPyConnection, full: InteractionMatrix, as_of: date, settings: NightSettings
) -> NewItems | None:
    """The new items that may take a list's last slot tonight (new_items.py)."""
    columns = new_item_columns(con, full.item_ids, as_of, settings.new_items.days)
    return NewItems.build(full.item_text, columns, settings.new_items)


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


@dataclass
class RefitNight:
    """A refit night's outcome: the evaluation, the refitted champion and every list."""

    as_of: date
    why: str
    split: date
    evaluation: Evaluation
    selection: dict
    champion: object
    full: InteractionMatrix
    available: np.ndarray
    lists: Lists
    settings_hash: str
    audience_rates: pd.DataFrame = field(default_factory=pd.DataFrame)
    diversity_trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    diversity: float = 0.0

    @property
    def audience_modes(self) -> dict[str, str]:
        """How tonight's audiences rank customers, per kind, as chosen on validation."""
        return aud.choose_modes(self.audience_rates) if len(self.audience_rates) else {}

    @property
    def champion_row(self) -> dict:
        return self.evaluation.table.loc[self.evaluation.table["is_champion"]].iloc[0].to_dict()

    @property
    def baseline_row(self) -> dict:
        return self.evaluation.table.loc[self.evaluation.table["is_baseline"]].iloc[0].to_dict()

    @property
    def fingerprints(self) -> np.ndarray:
        """Every customer's history fingerprint, kept to find tomorrow's changed customers."""
        return row_fingerprints(self.full)

    @property
    def scoring(self) -> dict:
        return getattr(self.champion, "scoring_", None) or {"scoring": "exact"}

    def summary(self, n: int) -> dict:
        """The champion against popularity, as logged and kept with the model."""
        champ, base = self.champion_row, self.baseline_row
        return {
            "champion": self.evaluation.champion_key,
            f"champion_ndcg_at_{n}": float(champ["ndcg"]),
            f"popularity_ndcg_at_{n}": float(base["ndcg"]),
            "beats_popularity": bool(champ["candidate"] != base["candidate"]),
            "selection_sample": self.selection["selection_sample"],
            "diversity_strength": self.diversity,
            **scoring_figures(self.scoring),
            **(
                aud.summary(self.audience_rates, self.audience_modes)
                if len(self.audience_rates)
                else {}
            ),
        }

    def kept_model(self, model_run_id: str, n: int) -> KeptModel | None:
        """The model kept for the nights between refits; only plain ALS can be kept (its lists
        are a function of each customer's history once the item side is fixed)."""
        if type(self.champion) is not ALSRecommender:
            return None
        full = self.full
        return KeptModel.from_champion(
            self.champion,
            full.item_ids,
            model_run_id=model_run_id,
            champion=self.evaluation.champion_key,
            trained_as_of=self.as_of,
            config_hash=self.settings_hash,
            catalogue_signature=catalogue_signature(
                full.item_ids, full.item_ids, self.available, full.item_categories, full.item_text
            ),
            summary=self.summary(n),
        )

    def metrics_rows(self, *, model_run_id: str, run_id: str) -> pd.DataFrame:
        """``recommendation_metrics`` rows: every candidate overall and per segment."""
        table = self.evaluation.table
        per_segment = self.evaluation.by_segment.rename(columns={"segment_name": "segment"})
        if len(per_segment):
            per_segment = per_segment.merge(
                table[["candidate", "model", "params", "is_champion", "is_baseline"]],
                on="candidate",
            ).drop(columns=["segment_code"])
        return pd.concat([table.assign(segment="all"), per_segment], ignore_index=True).assign(
            params=lambda f: f["params"].map(
                lambda p: json.dumps(p, default=str) if isinstance(p, dict) else None
            ),
            as_of=self.as_of,
            split_date=self.split,
            run_id=run_id,
            model_run_id=model_run_id,
        )


def refit_night(
    con: duckdb.DuckDBPyConnection,
    settings: NightSettings,
    plan: NightPlan,
    *,
    phases: PhaseTimer | None = None,
    log=lambda message: None,
) -> RefitNight:
    """Evaluate the candidates on the validation window, refit the champion on all data and
    score every customer.

    Above ``search_max_customers`` one setting per family is compared, on a sample of
    ``selection_customers``; an ALS champion is then refitted on everyone from its sample fit's
    item factors (``warm_start_iterations``). Raises ``NotEnoughData`` when nobody bought a new
    item in the window, so no candidate can be evaluated (``popularity_night`` then serves).
    """
    phases = phases or PhaseTimer()
    as_of = plan.as_of
    split = choose_split(con, as_of, settings.holdout_days)
    customers = con.execute(
        "select distinct customer_id from int_customer_item_daily where event_date < $split "
        "order by 1",
        {"split": split},
    ).fetchnumpy()["customer_id"]
    large = len(customers) > settings.search_max_customers
    sample = None
    if large and len(customers) > settings.selection_customers:
        rng = np.random.default_rng(settings.random_state)
        sample = np.sort(rng.choice(customers, settings.selection_customers, replace=False))
    train = load_interactions(con, weights=settings.weights, before=split, customers=sample)
    relevant = load_heldout_purchases(con, train, split)
    available = available_items(con)
    blocked = np.flatnonzero(~available)
    if relevant.nnz == 0:
        raise NotEnoughData(
            f"no customer bought a new item between {split} and {as_of}: nothing to "
            "evaluate recommenders on; supply a longer history"
        )
    log(f"evaluating candidates: train before {split}, {relevant.nnz} held-out purchases")
    search = settings.search and not large
    grid = default_grid(
        factors=list(settings.factors),
        search=search,
        random_state=settings.random_state,
        families=list(settings.families),
        extra=settings.extra_candidates(search) if settings.extra_candidates else (),
    )
    phases.lap("selection data")
    evaluation = evaluate(
        grid,
        train,
        relevant,
        k=settings.n,
        blocked=blocked,
        hybrids=search and (not settings.families or "hybrid" in settings.families),
        max_users=settings.eval_customers,
        random_state=settings.random_state,
    )
    phases.lap("candidate evaluation")
    for line in evaluation.skipped:
        log(line)
    audience_rates = aud.hit_rates(
        aud.evaluate_audiences(evaluation.fitted_champion, train, relevant, settings.audiences)
    )
    phases.lap("audience evaluation")
    trials = _diversity_trials(evaluation, train, relevant, blocked, settings)
    strength = (
        settings.diversity
        if settings.diversity is not None
        else div.choose_strength(trials, settings.diversity_max_ndcg_cost)
    )
    phases.lap("diversity trials")
    selection = {
        "train_users": train.shape[0],
        "items": train.shape[1],
        "heldout_users": int((np.diff(relevant.indptr) > 0).sum()),
        "selection_sample": "all customers" if sample is None else f"{len(sample)} customers",
    }
    del train, relevant
    full = load_interactions(con, weights=settings.weights)
    champion = evaluation.champion
    if (
        sample is not None
        and settings.warm_start_iterations is not None
        and type(champion) is ALSRecommender
    ):
        # Refit from the sample fit's item factors (see ALSRecommender.fit).
        champion = evaluation.fitted_champion
        champion.warm_start_iterations = settings.warm_start_iterations
        selection["champion_refit"] = f"warm start, {settings.warm_start_iterations} iterations"
    if isinstance(champion, ALSRecommender):
        champion.pool_min_users = settings.pool_scoring_min_customers
        champion.pool_min_recall = settings.pool_min_recall
    phases.lap("full data")
    # A keepable champion also keeps its user step as a fold-in, which the nights between
    # refits repeat exactly.
    if type(champion) is ALSRecommender:
        champion.fit(full, fold_in=True)
    else:
        champion.fit(full)
    phases.lap("champion fit")
    demoted = fb.demoted_pairs(con, full.user_ids, full.item_ids, as_of, settings.feedback)
    new_items = tonights_new_items(con, full, as_of, settings)
    lists = score_lists(champion, full, full, settings, blocked, strength, demoted, new_items)
    phases.lap("lists and reasons")
    return RefitNight(
        as_of=as_of,
        why=plan.why or "",
        split=split,
        evaluation=evaluation,
        selection=selection,
        champion=champion,
        full=full,
        available=available,
        lists=lists,
        settings_hash=plan.settings_hash,
        audience_rates=audience_rates,
        diversity_trials=trials,
        diversity=strength,
    )


def _diversity_trials(evaluation, train, relevant, blocked, settings) -> pd.DataFrame:
    """The champion's validation figures at each MMR strength, on the customers the candidates
    were evaluated on (the same sample as ``evaluate``'s)."""
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if len(users) > settings.eval_customers:
        rng = np.random.default_rng(settings.random_state)
        users = np.sort(rng.choice(users, settings.eval_customers, replace=False))
    model = evaluation.fitted_champion
    return div.diversity_trials(
        model,
        train.purchased,
        relevant,
        users,
        div.similarity_vectors(model, train.purchased),
        settings.n,
        blocked=blocked,
        categories=train.item_categories,
        popularity=np.asarray((train.weights > 0).sum(axis=0)).ravel() / max(train.shape[0], 1),
        max_per_category=settings.max_per_category,
    )


@dataclass
class RescoreNight:
    """A rescore night's outcome: the re-scored customers' lists and whom they cover."""

    kept: KeptModel
    champion: ALSRecommender
    full: InteractionMatrix
    fingerprints: np.ndarray
    rescored: np.ndarray  # mask over full's customers
    scope: str
    lists: Lists

    @property
    def counts(self) -> dict:
        return {
            "customers_rescored": int(self.rescored.sum()),
            "customers_kept": int(self.full.shape[0] - self.rescored.sum()),
            "items_unseen_by_model": self.kept.unseen_items(self.full.item_ids),
        }

    @property
    def kept_customers(self) -> np.ndarray:
        """Ids of the customers whose previous list stays as it is."""
        return self.full.user_ids[~self.rescored]


def rescore_night(
    con: duckdb.DuckDBPyConnection,
    settings: NightSettings,
    kept: KeptModel,
    *,
    phases: PhaseTimer | None = None,
) -> RescoreNight:
    """Re-score the customers whose history changed (and those with no purchase, whose
    popularity lists follow today's shop) with the kept model.

    Everyone is re-scored when ``rescore_all`` is set or an item the model knows changed its
    availability, category or text (the catalogue signature).
    """
    phases = phases or PhaseTimer()
    tonight = tonight_as_of(con)
    full = load_interactions(con, weights=settings.weights)
    available = available_items(con)
    blocked = np.flatnonzero(~available)
    signature = catalogue_signature(
        kept.item_ids, full.item_ids, available, full.item_categories, full.item_text
    )
    fingerprints = row_fingerprints(full)
    phases.lap("full data")
    cold = np.diff(full.purchased.indptr) == 0
    new_items = tonights_new_items(con, full, tonight, settings)
    if settings.rescore_all or signature != kept.catalogue_signature:
        rescore = np.ones(full.shape[0], dtype=bool)
        scope = (
            "every customer (rescore_all)"
            if settings.rescore_all
            else "every customer: the kept items' availability, categories or text changed"
        )
    else:
        unseen = kept.unseen_items(full.item_ids)
        changed = changed_customers(con, full.user_ids, fingerprints, settings.n, unseen > 0)
        shown = fb.shown_recently(con, full.user_ids, tonight, settings.feedback.window_days)
        # A kept list keeps its new-item slot until the customer changes or the next refit:
        # re-scoring every customer a new item could reach would redraw lists nothing changed.
        rescore = changed | cold | shown
        scope = (
            "customers whose history changed, customers with no purchase, and customers "
            "shown recommendations lately"
        )
    rows = np.flatnonzero(rescore)
    champion = kept.champion_for(full.item_ids)
    subset = full.take_users(rows)
    champion.fold_in(subset.weights)
    phases.lap("fold in")
    strength = float(kept.summary.get("diversity_strength", 0.0))
    demoted = fb.demoted_pairs(con, full.user_ids, full.item_ids, tonight, settings.feedback)
    lists = score_lists(
        champion, subset, full, settings, blocked, strength, demoted[rows], new_items
    )
    lists.users = rows[lists.users]
    phases.lap("lists and reasons")
    return RescoreNight(
        kept=kept,
        champion=champion,
        full=full,
        fingerprints=fingerprints,
        rescored=rescore,
        scope=scope,
        lists=lists,
    )


@dataclass
class PopularityNight:
    """A night whose history cannot support choosing a model (a few days, a single product):
    every customer gets the popular items of their segment, and ``note`` says why."""

    as_of: date
    note: str
    champion: SegmentPopularityRecommender
    full: InteractionMatrix
    lists: Lists

    @property
    def fingerprints(self) -> np.ndarray:
        return row_fingerprints(self.full)


def popularity_night(
    con: duckdb.DuckDBPyConnection, settings: NightSettings, plan: NightPlan, note: str
) -> PopularityNight:
    """Segment-popularity lists for everyone (the cold-start lists), with no evaluation."""
    full = load_interactions(con, weights=settings.weights)
    blocked = np.flatnonzero(~available_items(con))
    champion = SegmentPopularityRecommender(window_days=COLD_WINDOW_DAYS).fit(full)
    demoted = fb.demoted_pairs(con, full.user_ids, full.item_ids, plan.as_of, settings.feedback)
    new_items = tonights_new_items(con, full, plan.as_of, settings)
    lists = score_lists(
        champion, full, full, settings, blocked, demoted=demoted, new_items=new_items
    )
    return PopularityNight(as_of=plan.as_of, note=note, champion=champion, full=full, lists=lists)


def night_audiences(
    night: RefitNight | RescoreNight | PopularityNight,
    settings: aud.AudienceSettings,
    left_out: np.ndarray,
) -> tuple[aud.Audiences, aud.Audiences]:
    """Tonight's item and category audiences over every customer, ranked the way the last
    refit chose on validation (``RefitNight.audience_modes``, kept with the model).

    A rescore night folds every customer into the kept model (its lists re-score only the
    changed ones, but an audience ranks everyone against each other). ``left_out`` marks the
    opted-out customers (rows of ``night.full``).
    """
    full = night.full
    if isinstance(night, RescoreNight):
        model = night.kept.champion_for(full.item_ids)
        model.fold_in(full.weights)
        modes = {k: night.kept.summary.get(f"{k}_audience_mode", "model") for k in aud.KINDS}
    else:
        model = night.champion
        modes = night.audience_modes if isinstance(night, RefitNight) else {}
    targets = {
        "item": aud.target_items(full, settings),
        "category": aud.target_categories(full, settings),
    }
    item, category = (
        aud.build_audiences(
            model,
            full,
            kind,
            targets[kind],
            settings.size,
            mode=modes.get(kind, "baseline"),
            left_out=left_out,
            batch_size=settings.batch_size,
        )
        for kind in aud.KINDS
    )
    return item, category
