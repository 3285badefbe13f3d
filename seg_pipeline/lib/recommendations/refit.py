"""A refit night: candidates evaluated on the validation window, the champion refitted on
everyone and every list scored; or, when the history cannot support evaluating models,
segment-popularity lists for everyone (see ``nightly`` for the kinds of night)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from seg_pipeline.lib.recommendations import audiences as aud
from seg_pipeline.lib.recommendations import diversity as div
from seg_pipeline.lib.recommendations import feedback as fb
from seg_pipeline.lib.recommendations.evaluation import Evaluation, default_grid, evaluate
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.interactions import (
    InteractionMatrix,
    load_heldout_purchases,
    load_interactions,
)
from seg_pipeline.lib.recommendations.kept_model import (
    KeptModel,
    catalogue_signature,
    row_fingerprints,
)
from seg_pipeline.lib.recommendations.lists import COLD_WINDOW_DAYS, Lists
from seg_pipeline.lib.recommendations.new_items import tonights_new_items
from seg_pipeline.lib.recommendations.nightly import (
    NightPlan,
    NightSettings,
    NotEnoughData,
    available_items,
    choose_split,
    score_lists,
    scoring_figures,
)
from seg_pipeline.lib.recommendations.popularity import SegmentPopularityRecommender
from seg_pipeline.lib.timing import PhaseTimer


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

    def audience_ranking(self) -> tuple[object, dict[str, str]]:
        """The model that ranks tonight's audiences and the mode validation chose per kind."""
        return self.champion, self.audience_modes

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
    trials = div.validation_trials(
        evaluation.fitted_champion,
        train,
        relevant,
        settings.n,
        blocked=blocked,
        max_per_category=settings.max_per_category,
        max_users=settings.eval_customers,
        random_state=settings.random_state,
    )
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
    new_items = tonights_new_items(con, full, as_of, settings.new_items)
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

    def audience_ranking(self) -> tuple[object, dict[str, str]]:
        """Popularity ranks everyone alike: the audiences are the baseline's."""
        return self.champion, {}


def popularity_night(
    con: duckdb.DuckDBPyConnection, settings: NightSettings, plan: NightPlan, note: str
) -> PopularityNight:
    """Segment-popularity lists for everyone (the cold-start lists), with no evaluation."""
    full = load_interactions(con, weights=settings.weights)
    blocked = np.flatnonzero(~available_items(con))
    champion = SegmentPopularityRecommender(window_days=COLD_WINDOW_DAYS).fit(full)
    demoted = fb.demoted_pairs(con, full.user_ids, full.item_ids, plan.as_of, settings.feedback)
    new_items = tonights_new_items(con, full, plan.as_of, settings.new_items)
    lists = score_lists(
        champion, full, full, settings, blocked, demoted=demoted, new_items=new_items
    )
    return PopularityNight(as_of=plan.as_of, note=note, champion=champion, full=full, lists=lists)
