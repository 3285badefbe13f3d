"""Recommendations: a refit or a rescore night as a thin asset over
``seg_pipeline.lib.recommendations`` (``refit``, ``rescore``), where every list is scored."""

from dataclasses import replace
from functools import partial

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.recommendations import tracking
from seg_pipeline.defs.resources import MLflowTracking, PipelineSettings
from seg_pipeline.lib.parallel import in_background
from seg_pipeline.lib.recommendations import feedback, tables
from seg_pipeline.lib.recommendations.audiences import AudienceSettings, tonights_audiences
from seg_pipeline.lib.recommendations.interactions import Weights
from seg_pipeline.lib.recommendations.kept_model import config_hash
from seg_pipeline.lib.recommendations.neighbours import item_similarity_pairs
from seg_pipeline.lib.recommendations.new_items import NewItemSettings
from seg_pipeline.lib.recommendations.nightly import (
    NightSettings,
    NotEnoughData,
    SimilaritySettings,
    plan_night,
)
from seg_pipeline.lib.recommendations.refit import (
    PopularityNight,
    RefitNight,
    popularity_night,
    refit_night,
)
from seg_pipeline.lib.recommendations.rescore import RescoreNight, rescore_night
from seg_pipeline.lib.spark.als import mllib_candidates
from seg_pipeline.lib.timing import PhaseTimer


class InteractionWeights(dg.Config):
    """Confidence weights of the implicit-feedback matrix (lib/recommendations/interactions.py)."""

    purchase: float = Field(default=1.0, description="Per distinct order containing the item.")
    cart: float = Field(default=0.3, description="Per cart add.")
    view: float = Field(default=0.1, description="Per product view.")
    rating: float = Field(default=0.5, description="Times (mean rating - 3) / 2.")
    ret: float = Field(default=1.0, description="Subtracted per return.")

    def to_weights(self) -> Weights:
        """The library's weights."""
        return Weights(
            purchase=self.purchase, cart=self.cart, view=self.view, rating=self.rating, ret=self.ret
        )


class SimilarityConfig(dg.Config):
    """Item-item similarity settings (the ``item_similarities`` table)."""

    n: int = Field(default=10, description="Similar items kept per item.")
    weighting: str = Field(default="cosine", description="cosine, tfidf or bm25.")
    knn_neighbours: int = Field(default=50, description="Neighbours computed per item.")


class AudienceConfig(dg.Config):
    """Audiences: the customers most likely to buy an item or a category next
    (``item_audiences``, ``category_audiences``; lib/recommendations/audiences.py)."""

    size: int = Field(default=500, description="Customers per audience.")
    items: list[str] = Field(
        default_factory=list,
        description="Item ids that get an audience; empty: the top_items bought by the most "
        "customers in the last recent_days.",
    )
    top_items: int = Field(default=20, description="Items that get an audience by default.")
    categories: list[str] = Field(
        default_factory=list,
        description="Categories that get an audience; empty: the top_categories by recent buyers.",
    )
    top_categories: int = Field(default=10, description="Categories that get an audience.")
    recent_days: int = Field(default=30, description="Window that ranks items and categories.")

    def to_settings(self) -> AudienceSettings:
        """The library's settings."""
        return AudienceSettings(
            size=self.size,
            items=tuple(self.items),
            top_items=self.top_items,
            categories=tuple(self.categories),
            top_categories=self.top_categories,
            recent_days=self.recent_days,
        )


class RecommendationConfig(dg.Config):
    """List length, evaluation split, search and business rules."""

    n: int = Field(default=10, description="Recommendations per customer.")
    mllib_als: bool = Field(
        default=True,
        description="On the Spark engine, add MLlib's implicit ALS (fitted on Spark) to the "
        "candidates the validation window chooses from.",
    )
    holdout_days: int = Field(default=30, description="Last days before as_of used for validation.")
    search: bool = Field(
        default=True,
        description="Try several settings per model family and blends; off: one setting per "
        "family. Switched off automatically above search_max_customers.",
    )
    search_max_customers: int = Field(
        default=50_000, description="Above this many customers only one setting per family runs."
    )
    eval_customers: int = Field(
        default=20_000, description="Held-out customers scored per candidate (a fixed sample)."
    )
    selection_customers: int = Field(
        default=50_000,
        description="Above search_max_customers, candidates are fitted and compared on a random "
        "sample of this many customers (every item); the champion is then refitted on everyone.",
    )
    pool_scoring_min_customers: int | None = Field(
        default=200_000,
        description="From this many customers, factor models score a candidate pool of items (the "
        "union of 10k random customers' exact lists) instead of every item; None: always exact.",
    )
    pool_min_recall: float = Field(
        default=0.99,
        description="Pool scoring is dropped for exact scoring when, on 5k customers scored both "
        "ways, it keeps less than this share of the exact lists' quality (see factor_models.py).",
    )
    warm_start_iterations: int | None = Field(
        default=2,
        description="When candidates were compared on a sample, the ALS champion is refitted on "
        "everyone starting from its sample fit's item factors, with this many iterations "
        "(None: a cold fit with the candidate's own iterations). The published user factors "
        "then come from one more user step (fold_in).",
    )
    factors: list[int] = Field(default=[64, 128], description="Latent factors tried for ALS/BPR.")
    families: list[str] = Field(
        default_factory=list,
        description="Model families that compete with the popularity baselines (als, bpr, "
        "item_knn, ease, rp3beta, content, hybrid); empty: all of them.",
    )
    max_per_category: int | None = Field(
        default=4, description="At most this many items of one category per list (diversity cap)."
    )
    diversity: float | None = Field(
        default=None,
        description="Strength of the maximal-marginal-relevance re-ranking of each list (0: the "
        "champion's own order, 1: only diversity). None: the largest of 0, 0.1, 0.2, 0.3, 0.5 "
        "whose validation NDCG is within diversity_max_ndcg_cost of 0's.",
    )
    diversity_max_ndcg_cost: float = Field(
        default=0.02,
        description="The NDCG a more diverse list may cost on validation, as a share of the "
        "champion's own (when diversity is None).",
    )
    repeatable_items: list[str] = Field(
        default_factory=list, description="Item ids that may be recommended again after purchase."
    )
    random_state: int = Field(default=42, description="Seed for the factor models.")
    retrain_every_days: int = Field(
        default=7,
        description="Select and refit the champion when the kept model is this many days old "
        "(or any model setting changed). On the nights between, the kept ALS model re-scores "
        "only customers whose history changed; the others keep their list, which a re-score "
        "would reproduce exactly. 0: refit every run. Champions other than ALS refit nightly.",
    )
    rescore_all: bool = Field(
        default=False,
        description="On a night between refits, re-score every customer with the kept model "
        "(same lists, slower: an audit of the incremental path).",
    )
    register_model: bool = Field(default=True, description="Register the champion in MLflow.")
    weights: InteractionWeights = Field(default_factory=InteractionWeights)
    similarity: SimilarityConfig = Field(
        default_factory=SimilarityConfig,
        description="Item-item similarity, computed on the same full matrix as the lists.",
    )
    demote_after_impressions: int | None = Field(
        default=3,
        description="An item shown to a customer this many times in demote_window_days without "
        "a click or a purchase leaves their list from the next night (needs --impressions; "
        "None: never).",
    )
    demote_window_days: int = Field(default=30, description="Window of the demotion rule.")
    new_item_days: int | None = Field(
        default=14,
        description="Items first seen this many days before as_of (or never seen in an event) "
        "are new: the last slot of a list goes to the new item whose text reads most like the "
        "customer's history (None: no slot for new items).",
    )
    new_item_min_similarity: float = Field(
        default=0.2,
        description="TF-IDF cosine (summed over the customer's items) a new item needs to "
        "take that slot.",
    )
    audiences: AudienceConfig = Field(
        default_factory=AudienceConfig,
        description="Item and category audiences, ranked by the champion (or the baseline of "
        "past category buyers, or both, as validation chose).",
    )

    def to_settings(self) -> NightSettings:
        """The library's settings (``lib/recommendations/nightly.py``)."""
        values = self.model_dump(exclude=_NOT_NIGHT_SETTINGS)
        return NightSettings(
            **{
                **values,
                "factors": tuple(self.factors),
                "families": tuple(self.families),
                "repeatable_items": tuple(self.repeatable_items),
            },
            weights=self.weights.to_weights(),
            similarity=SimilaritySettings(**self.similarity.model_dump()),
            audiences=self.audiences.to_settings(),
            feedback=feedback.FeedbackSettings(
                demote_after=self.demote_after_impressions, window_days=self.demote_window_days
            ),
            new_items=NewItemSettings(
                days=self.new_item_days, min_similarity=self.new_item_min_similarity
            ),
        )

    def settings_hash(self) -> str:
        """A hash of the settings that decide which model is fitted and what it recommends:
        when it changes, tonight refits."""
        return config_hash(self.model_dump(exclude=_NOT_MODEL_SETTINGS))


# Rules applied to tonight's lists and audiences, not to the model: the library takes them as
# their own settings objects, and changing them does not force a refit.
_LIST_RULES = {
    "audiences",
    "demote_after_impressions",
    "demote_window_days",
    "new_item_days",
    "new_item_min_similarity",
}
# Config fields the library takes in another shape (or not at all).
_NOT_NIGHT_SETTINGS = {"register_model", "weights", "similarity", "mllib_als"} | _LIST_RULES
# Settings that do not change which model is fitted: changing them does not force a refit.
_NOT_MODEL_SETTINGS = {
    "retrain_every_days",
    "rescore_all",
    "register_model",
    "similarity",
} | _LIST_RULES


_DEPS = [
    "int_customer_item_daily",
    "item_catalog",
    "ingest_manifest",
    "customer_segments",
    "raw_impressions",
]


# What the recommendations step writes for the reporting models and the consumers.
RECOMMENDATION_TABLES = [
    "customer_recommendations",
    "recommendation_metrics",
    "item_similarities",
    "item_audiences",
    "category_audiences",
    "recommendation_feedback",
    "audience_metrics",
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "customer_recommendations",
            group_name="recommendations",
            deps=_DEPS,
            description="Top-N new items per customer from the champion model, with reasons.",
        ),
        dg.AssetSpec(
            "recommendation_metrics",
            group_name="recommendations",
            deps=_DEPS,
            description="Each candidate's offline metrics per refit date; champion flagged.",
        ),
        # Computed here rather than in its own asset so that the customer × item matrix is
        # loaded once per run.
        dg.AssetSpec(
            "item_similarities",
            group_name="recommendations",
            deps=["int_customer_item_daily", "item_catalog"],
            description="Each item's most similar items by item-item KNN on the purchase matrix.",
        ),
        dg.AssetSpec(
            "item_audiences",
            group_name="recommendations",
            deps=_DEPS,
            description="For the top (or configured) items, the customers most likely to buy "
            "each next, with a reason; never an opted-out customer or one who bought it.",
        ),
        dg.AssetSpec(
            "category_audiences",
            group_name="recommendations",
            deps=_DEPS,
            description="For the top (or configured) categories, the customers most likely to "
            "buy from each next, with a reason.",
        ),
        dg.AssetSpec(
            "recommendation_feedback",
            group_name="recommendations",
            deps=_DEPS,
            description="Impressions, clicks and purchases of shown recommendations per model, "
            "segment, rank and day (empty without --impressions).",
        ),
        dg.AssetSpec(
            "audience_metrics",
            group_name="recommendations",
            deps=_DEPS,
            description="Audience hit rates on each refit's validation window, against the "
            "baseline of past category buyers (history: one set of rows per refit date).",
        ),
    ],
    can_subset=False,
)
def recommendations(
    context: dg.AssetExecutionContext,
    config: RecommendationConfig,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    mlflow_tracking: MLflowTracking,
    engine: SqlEngine,
):
    """Refit night: evaluate candidates on a time split, refit the champion on all data, publish
    lists. Nights between: re-score only changed customers with the kept model."""
    phases = PhaseTimer()
    night_settings = config.to_settings()
    if engine.is_spark and config.mllib_als:
        night_settings = replace(
            night_settings,
            extra_candidates=partial(
                mllib_candidates,
                engine.session(),
                engine.staging(settings.work_path),
                factors=night_settings.factors[0],
                random_state=night_settings.random_state,
            ),
        )
    with duckdb.get_connection() as con:
        # Before tonight's lists replace last night's: new impressions are credited to the
        # lists that were shown.
        logged = feedback.attribute_impressions(con)
        plan = plan_night(con, config.settings_hash(), config.retrain_every_days)
        try:
            night = _night(context, con, night_settings, plan, phases)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from exc
    sim = night_settings.similarity
    # Similarities need only the matrix: computed on a second thread while this one logs and
    # writes the lists.
    publish = {RefitNight: _publish_refit, RescoreNight: _publish_rescore}.get(
        type(night), _publish_popularity
    )
    with in_background(
        item_similarity_pairs, night.full, sim.n, sim.weighting, sim.knn_neighbours
    ) as similar:
        lists_meta, metrics_meta = publish(
            context, config, settings, duckdb, mlflow_tracking, night, phases
        )
    with duckdb.get_connection() as con:
        similarity_meta = tables.write_item_similarities(
            con,
            night.full.item_ids,
            similar.result(),
            method=f"item_knn_{sim.weighting}",
            run_id=context.run_id,
        )
    phases.lap("item similarities (rest)")
    audience_meta = _publish_audiences(context, duckdb, night, night_settings, lists_meta)
    phases.lap("audiences")
    with duckdb.get_connection() as con:
        feedback_meta = feedback.write_feedback(con, context.run_id)
        engine.share(con, RECOMMENDATION_TABLES, settings.work_path)
    feedback_meta["impressions_logged"] = logged
    lists_meta.update(phases.report(context.log, "recommendations"))
    yield dg.MaterializeResult(asset_key="customer_recommendations", metadata=lists_meta)
    yield dg.MaterializeResult(asset_key="recommendation_metrics", metadata=metrics_meta)
    yield dg.MaterializeResult(asset_key="item_similarities", metadata=similarity_meta)
    for key, meta in audience_meta.items():
        yield dg.MaterializeResult(asset_key=key, metadata=meta)
    yield dg.MaterializeResult(asset_key="recommendation_feedback", metadata=feedback_meta)


def _publish_audiences(context, duckdb, night, night_settings, lists_meta) -> dict[str, dict]:
    """Build tonight's audiences with the night's model and write them (and, on a refit night,
    their validation hit rates); each audience asset's metadata."""
    settings = night_settings.audiences
    with duckdb.get_connection() as con:
        left_out = tables.opted_out_rows(con, night.full)
        model, modes = night.audience_ranking()
        built = tonights_audiences(model, night.full, settings, modes, left_out)
        refit = isinstance(night, RefitNight)
        counts = tables.write_audiences(
            con,
            built,
            night.full,
            night.audience_rates if refit else None,
            as_of=night.as_of if refit else None,
            split=night.split if refit else None,
            model_run_id=lists_meta["model_run_id"],
            run_id=context.run_id,
        )
    figures = {}
    if refit and len(night.audience_rates):
        rates = night.audience_rates
        figures = {
            "validation_hit_rates": dg.MetadataValue.md(
                rates[["kind", "mode", "model", "buyers", "hit_rate", "lift"]]
                .round(4)
                .to_markdown(index=False)
            ),
        }
        context.log.info(
            "audiences: "
            + "; ".join(
                f"{k} {m}: hit rate {v:.3f}"
                for k, m, v in rates[["kind", "mode", "hit_rate"]].itertuples(index=False)
            )
        )
    meta = {}
    for audience, key in zip(built, ("item_audiences", "category_audiences"), strict=True):
        meta[key] = {
            "dagster/row_count": counts[key],
            "audiences": int(len(audience.groups)),
            "ranked_by": audience.model,
            **figures,
        }
    meta["audience_metrics"] = {"dagster/row_count": counts["audience_metrics"], **figures}
    return meta


def _night(context, con, night_settings, plan, phases):
    """Tonight's kind of night: a rescore with the kept model, a refit, or popularity lists
    when the history cannot support evaluating models."""
    if plan.why is None:
        return rescore_night(con, night_settings, plan.kept, phases=phases)
    context.log.info(f"refitting the recommender: {plan.why}")
    try:
        return refit_night(con, night_settings, plan, phases=phases, log=context.log.info)
    except NotEnoughData as exc:
        context.log.warning(f"publishing popularity lists: {exc}")
        return popularity_night(con, night_settings, plan, str(exc))


def _publish_refit(context, config, settings, duckdb, mlflow_tracking, night: RefitNight, phases):
    """Log the refit night to MLflow and write its tables; the two assets' metadata."""
    n = config.n
    model_run_id = tracking.log_refit(
        context, mlflow_tracking, night, config.to_settings(), register_model=config.register_model
    )
    phases.lap("mlflow logging")
    summary = night.summary(n)
    metrics = night.metrics_rows(model_run_id=model_run_id, run_id=context.run_id)
    with duckdb.get_connection() as con:
        n_rows, n_customers = tables.write_refit_night(
            con,
            night,
            night.kept_model(model_run_id, n),
            metrics,
            model_run_id=model_run_id,
            run_id=context.run_id,
            key=settings.key(),
        )
    phases.lap("tables written")
    ranking = night.evaluation.table.sort_values("ndcg", ascending=False)[
        ["candidate", "ndcg", "precision", "recall", "map", "coverage", "is_champion"]
    ]
    lists_meta = {
        "dagster/row_count": n_rows,
        "customers": n_customers,
        "refit": True,
        "refit_reason": night.why,
        "customers_rescored": night.full.shape[0],
        "customers_kept": 0,
        **summary,
        "model_run_id": model_run_id,
    }
    metrics_meta = {
        "dagster/row_count": len(metrics),
        "split_date": str(night.split),
        "candidates": dg.MetadataValue.md(ranking.round(4).to_markdown(index=False)),
        "candidates_skipped": "; ".join(night.evaluation.skipped) or "none",
        "diversity_strength": night.diversity,
        "diversity_trials": dg.MetadataValue.md(
            night.diversity_trials[
                ["strength", "ndcg", "precision", "ild", "diversity", "coverage", "novelty"]
            ]
            .round(4)
            .to_markdown(index=False)
        ),
        "model_run_id": model_run_id,
    }
    return lists_meta, metrics_meta


def _publish_rescore(
    context, config, settings, duckdb, mlflow_tracking, night: RescoreNight, phases
):
    """Log the rescore night to MLflow and write its lists; the two assets' metadata."""
    tracking.log_rescore(context, mlflow_tracking, night)
    phases.lap("mlflow logging")
    with duckdb.get_connection() as con:
        n_rows, n_customers = tables.write_rescore_night(
            con, night, run_id=context.run_id, key=settings.key()
        )
        n_metrics = con.execute("select count(*) from recommendation_metrics").fetchall()[0][0]
    phases.lap("tables written")
    context.log.info(f"recommendations: re-scored with the kept model {night.counts}")
    kept = night.kept
    lists_meta = {
        "dagster/row_count": n_rows,
        "customers": n_customers,
        "refit": False,
        "rescored": night.scope,
        **night.counts,
        **kept.summary,
        "model_trained_as_of": str(kept.trained_as_of),
        "model_run_id": kept.model_run_id,
    }
    metrics_meta = {
        "dagster/row_count": n_metrics,
        "evaluated_tonight": False,
        "model_trained_as_of": str(kept.trained_as_of),
        "model_run_id": kept.model_run_id,
    }
    return lists_meta, metrics_meta


def _publish_popularity(
    context, config, settings, duckdb, mlflow_tracking, night: PopularityNight, phases
):
    """Log and write a night that could not evaluate models; the two assets' metadata."""
    model_run_id = tracking.log_popularity(context, mlflow_tracking, night)
    with duckdb.get_connection() as con:
        n_rows, n_customers = tables.write_popularity_night(
            con, night, model_run_id=model_run_id, run_id=context.run_id, key=settings.key()
        )
    phases.lap("tables written")
    lists_meta = {
        "dagster/row_count": n_rows,
        "customers": n_customers,
        "refit": True,
        "champion": night.champion.name,
        "degraded": night.note,
        "model_run_id": model_run_id,
    }
    return lists_meta, {"evaluated_tonight": False, "why": night.note}
