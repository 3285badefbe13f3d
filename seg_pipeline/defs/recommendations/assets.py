"""Recommendations: evaluate candidates on a time split, publish the champion with reasons."""

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import Field

from seg_pipeline.defs.resources import MLflowTracking, PipelineSettings
from seg_pipeline.lib.privacy import ensure_privacy_tables
from seg_pipeline.lib.recommendations.evaluation import evaluate
from seg_pipeline.lib.recommendations.interactions import (
    Weights,
    load_heldout_purchases,
    load_interactions,
)
from seg_pipeline.lib.recommendations.models import (
    ALSRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
    top_similar_items,
)
from seg_pipeline.lib.recommendations.reasons import explain_by_similarity, explain_by_vectors


class InteractionWeights(dg.Config):
    """Confidence weights of the implicit-feedback matrix (lib/recommendations/interactions.py)."""

    purchase: float = Field(default=1.0, description="Per distinct order containing the item.")
    cart: float = Field(default=0.3, description="Per cart add.")
    view: float = Field(default=0.1, description="Per product view.")
    rating: float = Field(default=0.5, description="Times (mean rating - 3) / 2.")
    ret: float = Field(default=1.0, description="Subtracted per return.")

    def to_weights(self) -> Weights:
        return Weights(
            purchase=self.purchase, cart=self.cart, view=self.view, rating=self.rating, ret=self.ret
        )


class RecommendationConfig(dg.Config):
    """List length, evaluation split and model settings."""

    n: int = Field(default=10, description="Recommendations per customer.")
    holdout_days: int = Field(
        default=30, description="The last days before as_of form the validation window."
    )
    als_factors: int = Field(default=64, description="ALS latent factors.")
    als_iterations: int = Field(default=15, description="ALS iterations.")
    als_regularization: float = Field(default=0.05, description="ALS L2 regularisation.")
    knn_neighbours: int = Field(default=50, description="Neighbours kept per item in item-KNN.")
    random_state: int = Field(default=42, description="Seed for ALS.")
    weights: InteractionWeights = Field(default_factory=InteractionWeights)


class SimilarityConfig(dg.Config):
    """Item-item similarity settings."""

    n: int = Field(default=10, description="Similar items kept per item.")
    weighting: str = Field(default="cosine", description="cosine, tfidf or bm25.")
    knn_neighbours: int = Field(default=50, description="Neighbours computed per item.")
    weights: InteractionWeights = Field(default_factory=InteractionWeights)


class SegmentPopularityConfig(dg.Config):
    """Cold-start lists per segment."""

    n: int = Field(default=10, description="Items per segment.")
    window_days: int = Field(
        default=180, description="Only purchases in this many days before as_of count."
    )


def _candidates(config: RecommendationConfig) -> list[Recommender]:
    return [
        PopularityRecommender(),
        ALSRecommender(
            factors=config.als_factors,
            iterations=config.als_iterations,
            regularization=config.als_regularization,
            random_state=config.random_state,
        ),
        ItemKNNRecommender(weighting="cosine", k=config.knn_neighbours),
        ItemKNNRecommender(weighting="bm25", k=config.knn_neighbours),
    ]


def choose_split(con, as_of, holdout_days: int):
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
        raise dg.Failure("no purchases by known customers: nothing to recommend from")
    return split if share_before >= 0.5 else p80


def _item_frame(con) -> pd.DataFrame:
    return con.execute(
        "select item_id, title, category, available from item_catalog order by item_id"
    ).df()


@dg.asset(deps=["int_customer_item_daily", "item_catalog"], group_name="recommendations")
def item_similarities(
    context: dg.AssetExecutionContext, config: SimilarityConfig, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """Each item's most similar items by item-item KNN on the purchase matrix."""
    with duckdb.get_connection() as con:
        matrix = load_interactions(con, weights=config.weights.to_weights())
        knn = ItemKNNRecommender(weighting=config.weighting, k=config.knn_neighbours).fit(
            matrix.weights
        )
        rows, cols, vals = top_similar_items(knn.similarity, config.n)
        frame = pa.table({"i": rows, "j": cols, "score": vals})
        ids = pa.table(
            {"idx": np.arange(len(matrix.item_ids)), "item_id": matrix.item_ids.astype(str)}
        )
        con.register("sim_pairs", frame)
        con.register("item_ids", ids)
        con.execute(
            """
            create or replace table item_similarities as
            select a.item_id,
                   row_number() over (partition by a.item_id order by p.score desc, b.item_id)
                       as rank,
                   b.item_id as similar_item_id, p.score::double as score,
                   $method as method, $run_id as run_id
            from sim_pairs p
            join item_ids a on a.idx = p.i
            join item_ids b on b.idx = p.j
            """,
            {"method": f"item_knn_{config.weighting}", "run_id": context.run_id},
        )
        n_rows, n_items = con.execute(
            "select count(*), count(distinct item_id) from item_similarities"
        ).fetchall()[0]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n_rows,
            "items_with_neighbours": n_items,
            "method": f"item_knn_{config.weighting}",
        }
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "customer_recommendations",
            group_name="recommendations",
            deps=["int_customer_item_daily", "item_catalog", "ingest_manifest"],
            description="Top-N new items per customer from the champion model, with reasons.",
        ),
        dg.AssetSpec(
            "recommendation_metrics",
            group_name="recommendations",
            deps=["int_customer_item_daily", "item_catalog", "ingest_manifest"],
            description="Each candidate's offline metrics per run date; the champion flagged.",
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
):
    """Evaluate every candidate on a time split, then refit the champion on all data and publish."""
    import mlflow

    weights = config.weights.to_weights()
    with duckdb.get_connection() as con:
        as_of = con.execute("select as_of from ingest_manifest").fetchall()[0][0]
        split = choose_split(con, as_of, config.holdout_days)
        items = _item_frame(con)
        train = load_interactions(con, weights=weights, before=split)
        relevant = load_heldout_purchases(con, train, split)
        full = load_interactions(con, weights=weights)

    categories = pd.factorize(items["category"])[0]
    blocked = np.flatnonzero(~items["available"].to_numpy(dtype=bool))
    if relevant.nnz == 0:
        raise dg.Failure(
            f"no customer bought a new item between {split} and {as_of}: nothing to evaluate "
            "recommenders on; supply a longer history"
        )
    evaluation = evaluate(
        _candidates(config),
        train,
        relevant,
        k=config.n,
        item_categories=categories,
        blocked=blocked,
    )
    table = evaluation.table
    champion = next(m for m in _candidates(config) if m.name == evaluation.champion)
    champion.fit(full.weights)
    users = np.arange(full.shape[0])
    recs = champion.recommend(users, full.purchased, config.n, blocked=blocked)
    if isinstance(champion, ALSRecommender):
        because, _ = explain_by_vectors(recs.items, full.weights, champion.item_vectors)
    elif isinstance(champion, ItemKNNRecommender):
        because, _ = explain_by_similarity(recs.items, full.weights, champion.similarity)
    else:
        because = np.full(recs.items.shape, -1)

    with mlflow_tracking.start_run(
        context, "recommendations", run_name="champion_selection"
    ) as parent:
        mlflow.log_params(
            {
                "n": config.n,
                "holdout_days": config.holdout_days,
                "split_date": str(split),
                "weights": json.dumps(weights.__dict__),
                "champion": evaluation.champion,
                "train_users": train.shape[0],
                "items": train.shape[1],
                "heldout_users": int((np.diff(relevant.indptr) > 0).sum()),
            }
        )
        for row in table.itertuples():
            with mlflow_tracking.start_run(
                context, "recommendations", run_name=row.model, parent_run_id=parent.info.run_id
            ):
                mlflow.log_params({"model": row.model, **row.params})
                mlflow.log_metrics(_metric_dict(row._asdict(), config.n))
        champ_row = table.loc[table["is_champion"]].iloc[0].to_dict()
        mlflow.log_metrics(_metric_dict(champ_row, config.n))
        with tempfile.TemporaryDirectory() as tmp:
            table.assign(params=table["params"].map(json.dumps)).to_csv(
                Path(tmp, "candidates.csv"), index=False
            )
            if isinstance(champion, ALSRecommender):
                np.save(Path(tmp, "item_factors.npy"), champion.item_vectors)
                np.save(Path(tmp, "item_ids.npy"), full.item_ids.astype(str))
            mlflow.log_artifacts(tmp, artifact_path="model")
        model_run_id = parent.info.run_id

    n_users, n = recs.items.shape
    long = pa.table(
        {
            "u": np.repeat(np.arange(n_users), n),
            "rank": np.tile(np.arange(1, n + 1), n_users),
            "i": recs.items.ravel(),
            "score": recs.scores.ravel().astype(np.float64),
            "b": because.ravel(),
        }
    )
    user_ids = pa.table({"u": np.arange(n_users), "customer_id": full.user_ids.astype(str)})
    item_ids = pa.table({"i": np.arange(len(full.item_ids)), "item_id": full.item_ids.astype(str)})
    metrics_rows = table.assign(
        params=table["params"].map(json.dumps),
        as_of=as_of,
        split_date=split,
        run_id=context.run_id,
        model_run_id=model_run_id,
    )
    with duckdb.get_connection() as con:
        for name, value in (
            ("recs_long", long),
            ("user_ids", user_ids),
            ("item_ids", item_ids),
            ("metrics_df", metrics_rows),
        ):
            con.register(name, value)
        ensure_privacy_tables(con)
        con.execute("begin transaction")
        # Customers who opted out get no list; they are kept by id (work file only) so the checks
        # can tell an opt-out from a missing list.
        con.execute(
            """
            create or replace table recommendation_opt_outs as
            select customer_id from user_ids
            where sha256($key || ':' || customer_id)
                  in (select customer_hash from opted_out_customers)
            """,
            {"key": settings.key()},
        )
        con.execute(
            """
            create or replace table customer_recommendations as
            with purchased as (
                select customer_id, item_id from int_customer_item_daily
                group by all having sum(n_orders) > 0
            )
            select
                users.customer_id,
                r.rank::integer as rank,
                items.item_id,
                r.score,
                $model as model,
                case
                    when b.item_id is not null and p.item_id is not null
                        then 'Because you bought ' || bc.title
                    when b.item_id is not null then 'Because you looked at ' || bc.title
                    when $model = 'popularity' then 'Popular with other customers right now'
                    else 'Customers with a history like yours often buy this'
                end as reason,
                b.item_id as because_item_id,
                $model_run_id as model_run_id,
                $run_id as run_id
            from recs_long r
            join user_ids users on users.u = r.u
            join item_ids items on items.i = r.i
            left join item_ids b on b.i = r.b
            left join item_catalog bc on bc.item_id = b.item_id
            left join purchased p on p.customer_id = users.customer_id and p.item_id = b.item_id
            where r.i >= 0
              and users.customer_id not in (select customer_id from recommendation_opt_outs)
            """,
            {"model": evaluation.champion, "model_run_id": model_run_id, "run_id": context.run_id},
        )
        con.execute(
            """
            create table if not exists recommendation_metrics as
            select * exclude (params), params from metrics_df where false
            """
        )
        con.execute("delete from recommendation_metrics where as_of = $as_of", {"as_of": as_of})
        con.execute("insert into recommendation_metrics by name select * from metrics_df")
        con.execute("commit")
        n_rows, n_customers = con.execute(
            "select count(*), count(distinct customer_id) from customer_recommendations"
        ).fetchall()[0]

    summary = table[["model", "ndcg", "precision", "recall", "map", "coverage", "is_champion"]]
    yield dg.MaterializeResult(
        asset_key="customer_recommendations",
        metadata={
            "dagster/row_count": n_rows,
            "customers": n_customers,
            "champion": evaluation.champion,
            f"champion_ndcg_at_{config.n}": float(champ_row["ndcg"]),
            "model_run_id": model_run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key="recommendation_metrics",
        metadata={
            "dagster/row_count": len(table),
            "split_date": str(split),
            "candidates": dg.MetadataValue.md(summary.round(4).to_markdown(index=False)),
            "model_run_id": model_run_id,
        },
    )


def _metric_dict(row: dict, k: int) -> dict[str, float]:
    names = (
        "precision",
        "recall",
        "f1",
        "ndcg",
        "map",
        "hit_rate",
        "mrr",
        "coverage",
        "diversity",
        "novelty",
        "fit_seconds",
    )
    return {
        f"{m}_at_{k}"
        if m not in ("coverage", "diversity", "novelty", "fit_seconds", "mrr")
        else m: float(row[m])
        for m in names
        if row.get(m) is not None and np.isfinite(row[m])
    }


@dg.asset(
    deps=["customer_segments", "int_customer_item_daily", "item_catalog", "ingest_manifest"],
    group_name="recommendations",
)
def segment_recommendations(
    context: dg.AssetExecutionContext, config: SegmentPopularityConfig, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """The items bought by the most customers of each segment recently: the cold-start lists."""
    with duckdb.get_connection() as con:
        con.execute(
            """
            create or replace table segment_recommendations as
            with manifest as (select as_of from ingest_manifest),
            recent as (
                select d.customer_id, d.item_id
                from int_customer_item_daily d, manifest
                where d.n_orders > 0 and d.event_date >= manifest.as_of - to_days($window_days)
                group by all
            ),
            counted as (
                select s.segment_id, r.item_id, count(*) as buyers
                from recent r
                join customer_segments s using (customer_id)
                join item_catalog i using (item_id)
                where i.available
                group by all
            ),
            sized as (
                select segment_id, count(*) as n_customers from customer_segments group by all
            ),
            ranked as (
                select c.segment_id, c.item_id, c.buyers::double / s.n_customers as score,
                       row_number() over (partition by c.segment_id
                                          order by c.buyers desc, c.item_id) as rank
                from counted c join sized s using (segment_id)
            )
            select segment_id, rank::integer as rank, item_id, score,
                   'segment_popularity' as method, $run_id as run_id
            from ranked
            where rank <= $n
            """,
            {"n": config.n, "run_id": context.run_id, "window_days": config.window_days},
        )
        n_rows, n_segments = con.execute(
            "select count(*), count(distinct segment_id) from segment_recommendations"
        ).fetchall()[0]
    return dg.MaterializeResult(metadata={"dagster/row_count": n_rows, "segments": n_segments})
