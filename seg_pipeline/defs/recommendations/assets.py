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
from seg_pipeline.lib.parallel import in_background
from seg_pipeline.lib.recommendations.evaluation import default_grid, evaluate
from seg_pipeline.lib.recommendations.interactions import (
    Weights,
    load_heldout_purchases,
    load_interactions,
)
from seg_pipeline.lib.recommendations.models import (
    ALSRecommender,
    ItemKNNRecommender,
    SegmentPopularityRecommender,
    top_similar_items,
)
from seg_pipeline.lib.recommendations.publishing import (
    COLD_WINDOW_DAYS,
    build_lists,
    write_lists,
)
from seg_pipeline.lib.recommendations.serving import HistoryRecommender, export_model
from seg_pipeline.lib.recommendations.state import (
    CUSTOMERS_TABLE,
    KeptModel,
    catalogue_signature,
    changed_customers,
    config_hash,
    load_model,
    row_fingerprints,
    save_state,
)
from seg_pipeline.lib.timing import PhaseTimer

REGISTERED_MODEL = "seg_pipeline_recommender"


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


class SimilarityConfig(dg.Config):
    """Item-item similarity settings (the ``item_similarities`` table)."""

    n: int = Field(default=10, description="Similar items kept per item.")
    weighting: str = Field(default="cosine", description="cosine, tfidf or bm25.")
    knn_neighbours: int = Field(default=50, description="Neighbours computed per item.")


class RecommendationConfig(dg.Config):
    """List length, evaluation split, search and business rules."""

    n: int = Field(default=10, description="Recommendations per customer.")
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
        "ways, it keeps less than this share of the exact lists' quality (see models.py).",
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
        "item_knn, content, hybrid); empty: all of them.",
    )
    max_per_category: int | None = Field(
        default=4, description="At most this many items of one category per list (diversity cap)."
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


def item_similarity_pairs(matrix, config: SimilarityConfig) -> tuple[np.ndarray, ...]:
    """Fit item-item KNN on ``matrix``; each item's ``config.n`` most similar items as
    (item column, similar item column, score) arrays.

    Both nights compute this on a second thread (``in_background``) while MLflow logs and the
    lists are written, phases that leave a core partly idle: it needs only the matrix. It does
    not touch DuckDB: registering Arrow tables on two threads at once once failed in CI with
    "Table Function with name python_arrow_scan does not exist", so the writing stays on the
    step's own thread (``write_item_similarities``).
    """
    knn = ItemKNNRecommender(weighting=config.weighting, k=config.knn_neighbours).fit(matrix)
    return top_similar_items(knn.similarity, config.n)


def write_item_similarities(
    con, item_ids: np.ndarray, pairs: tuple, config: SimilarityConfig, run_id: str
) -> dict:
    """Replace ``item_similarities`` with ``pairs`` (``item_similarity_pairs``); its metadata."""
    rows, cols, vals = pairs
    con.register("sim_pairs", pa.table({"i": rows, "j": cols, "score": vals}))
    con.register(
        "sim_item_ids",
        pa.table({"idx": np.arange(len(item_ids)), "item_id": item_ids.astype(str)}),
    )
    con.execute(
        """
        create or replace table item_similarities as
        select a.item_id,
               row_number() over (partition by a.item_id order by p.score desc, b.item_id)
                   as rank,
               b.item_id as similar_item_id, p.score::double as score,
               $method as method, $run_id as run_id
        from sim_pairs p
        join sim_item_ids a on a.idx = p.i
        join sim_item_ids b on b.idx = p.j
        """,
        {"method": f"item_knn_{config.weighting}", "run_id": run_id},
    )
    con.unregister("sim_pairs")
    con.unregister("sim_item_ids")
    n_rows, n_items = con.execute(
        "select count(*), count(distinct item_id) from item_similarities"
    ).fetchall()[0]
    return {
        "dagster/row_count": n_rows,
        "items_with_neighbours": n_items,
        "method": f"item_knn_{config.weighting}",
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "customer_recommendations",
            group_name="recommendations",
            deps=[
                "int_customer_item_daily",
                "item_catalog",
                "ingest_manifest",
                "customer_segments",
            ],
            description="Top-N new items per customer from the champion model, with reasons.",
        ),
        dg.AssetSpec(
            "recommendation_metrics",
            group_name="recommendations",
            deps=[
                "int_customer_item_daily",
                "item_catalog",
                "ingest_manifest",
                "customer_segments",
            ],
            description="Each candidate's offline metrics per refit date; champion flagged.",
        ),
        # Computed here rather than in its own asset so that the customer × item matrix is
        # loaded once per run (each load took 9 s at 10M events).
        dg.AssetSpec(
            "item_similarities",
            group_name="recommendations",
            deps=["int_customer_item_daily", "item_catalog"],
            description="Each item's most similar items by item-item KNN on the purchase matrix.",
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
    """Refit night: evaluate candidates on a time split, refit the champion on all data, publish
    lists. Nights between: re-score only changed customers with the kept model (state.py)."""
    phases = PhaseTimer()
    with duckdb.get_connection() as con:
        as_of = con.execute("select as_of from ingest_manifest").fetchall()[0][0]
        kept = load_model(con)
        lists_kept = con.execute(
            "select count(*) = 2 from information_schema.tables where table_name in "
            "('customer_recommendations', $fingerprints)",
            {"fingerprints": CUSTOMERS_TABLE},
        ).fetchall()[0][0]
    settings_hash = config_hash(config.model_dump(exclude=_NOT_MODEL_SETTINGS))
    if kept is None:
        why = "no kept model"
    elif not lists_kept:
        why = "the kept model's lists are missing"
    else:
        why = kept.retrain_reason(as_of, settings_hash, config.retrain_every_days)
    if why is None:
        yield from _rescore(context, config, settings, duckdb, mlflow_tracking, kept, phases)
    else:
        context.log.info(f"refitting the recommender: {why}")
        yield from _refit(
            context, config, settings, duckdb, mlflow_tracking, as_of, settings_hash, why, phases
        )


# Settings that do not change which model is fitted or what it recommends: changing them does
# not force a refit.
_NOT_MODEL_SETTINGS = {"retrain_every_days", "rescore_all", "register_model", "similarity"}


def _refit(context, config, settings, duckdb, mlflow_tracking, as_of, settings_hash, why, phases):
    import mlflow

    weights = config.weights.to_weights()
    with duckdb.get_connection() as con:
        split = choose_split(con, as_of, config.holdout_days)
        customers = con.execute(
            "select distinct customer_id from int_customer_item_daily where event_date < $split "
            "order by 1",
            {"split": split},
        ).fetchnumpy()["customer_id"]
        large = len(customers) > config.search_max_customers
        sample = None
        if large and len(customers) > config.selection_customers:
            rng = np.random.default_rng(config.random_state)
            sample = np.sort(rng.choice(customers, config.selection_customers, replace=False))
        train = load_interactions(con, weights=weights, before=split, customers=sample)
        relevant = load_heldout_purchases(con, train, split)
        available = _available(con)
    blocked = np.flatnonzero(~available)
    if relevant.nnz == 0:
        raise dg.Failure(
            f"no customer bought a new item between {split} and {as_of}: nothing to "
            "evaluate recommenders on; supply a longer history"
        )
    context.log.info(
        f"evaluating candidates: train before {split}, {relevant.nnz} held-out purchases"
    )
    search = config.search and not large
    grid = default_grid(
        factors=config.factors,
        search=search,
        random_state=config.random_state,
        families=config.families,
    )
    phases.lap("selection data")
    evaluation = evaluate(
        grid,
        train,
        relevant,
        k=config.n,
        blocked=blocked,
        hybrids=search and (not config.families or "hybrid" in config.families),
        max_users=config.eval_customers,
        random_state=config.random_state,
    )
    phases.lap("candidate evaluation")
    table = evaluation.table
    selection = {
        "train_users": train.shape[0],
        "items": train.shape[1],
        "heldout_users": int((np.diff(relevant.indptr) > 0).sum()),
        "selection_sample": "all customers" if sample is None else f"{len(sample)} customers",
    }
    del train, relevant
    with duckdb.get_connection() as con:
        full = load_interactions(con, weights=weights)
    champion = evaluation.champion
    if (
        sample is not None
        and config.warm_start_iterations is not None
        and type(champion) is ALSRecommender
    ):
        # Refit from the sample fit's item factors (see ALSRecommender.fit).
        champion = evaluation.fitted_champion
        champion.warm_start_iterations = config.warm_start_iterations
        selection["champion_refit"] = f"warm start, {config.warm_start_iterations} iterations"
    if isinstance(champion, ALSRecommender):
        champion.pool_min_users = config.pool_scoring_min_customers
        champion.pool_min_recall = config.pool_min_recall
    phases.lap("full data")
    # Only plain ALS can be kept: its lists are a function of each customer's history once the
    # item side is fixed (fold_in). Other champions are refitted every night.
    keepable = type(champion) is ALSRecommender
    if keepable:
        champion.fit(full, fold_in=True)
    else:
        champion.fit(full)
    phases.lap("champion fit")
    lists = _lists(champion, full, full, config, blocked)
    phases.lap("lists and reasons")
    with in_background(item_similarity_pairs, full, config.similarity) as similar:
        scoring = getattr(champion, "scoring_", None) or {"scoring": "exact"}
        champ_row = table.loc[table["is_champion"]].iloc[0].to_dict()
        base_row = table.loc[table["is_baseline"]].iloc[0].to_dict()

        with mlflow_tracking.start_run(
            context, "recommendations", run_name="champion_selection"
        ) as parent:
            mlflow.log_params(
                {
                    "n": config.n,
                    "holdout_days": config.holdout_days,
                    "split_date": str(split),
                    "weights": json.dumps(weights.__dict__),
                    "champion": evaluation.champion_key,
                    "baseline": base_row["candidate"],
                    "refit_reason": why[:500],
                    **selection,
                    **{f"scoring_{k}": v for k, v in scoring.items()},
                }
            )
            mlflow_tracking.log_children(
                context,
                parent,
                [
                    (
                        row["candidate"],
                        {
                            "model": row["model"],
                            "candidate": row["candidate"][:500],
                            "params": json.dumps(row["params"], default=str)[:500],
                        },
                        _metric_dict(row, config.n),
                    )
                    for row in table.to_dict("records")
                ],
            )
            mlflow.log_metrics(_metric_dict(champ_row, config.n))
            mlflow.log_metric(f"baseline_ndcg_at_{config.n}", float(base_row["ndcg"]))
            with tempfile.TemporaryDirectory() as tmp:
                table.assign(
                    params=table["params"].map(lambda p: json.dumps(p, default=str))
                ).to_csv(Path(tmp, "candidates.csv"), index=False)
                evaluation.by_segment.to_csv(Path(tmp, "candidates_by_segment.csv"), index=False)
                mlflow.log_artifacts(tmp, artifact_path="evaluation")
                model_dir = Path(tmp, "model_dir")
                export_model(champion, full.item_ids, model_dir)
                mlflow.pyfunc.log_model(
                    name="recommender",
                    python_model=HistoryRecommender(),
                    artifacts={"model_dir": str(model_dir)},
                    pip_requirements=["numpy", "scipy", "pandas", "mlflow"],
                    code_paths=None,
                    registered_model_name=REGISTERED_MODEL if config.register_model else None,
                )
            model_run_id = parent.info.run_id

        phases.lap("mlflow logging")
        summary = {
            "champion": evaluation.champion_key,
            f"champion_ndcg_at_{config.n}": float(champ_row["ndcg"]),
            f"popularity_ndcg_at_{config.n}": float(base_row["ndcg"]),
            "beats_popularity": bool(champ_row["candidate"] != base_row["candidate"]),
            "selection_sample": selection["selection_sample"],
            **{f"scoring_{k}": v for k, v in scoring.items()},
        }
        kept = None
        if keepable:
            kept = KeptModel.from_champion(
                champion,
                full.item_ids,
                model_run_id=model_run_id,
                champion=evaluation.champion_key,
                trained_as_of=as_of,
                config_hash=settings_hash,
                catalogue_signature=catalogue_signature(
                    full.item_ids, full.item_ids, available, full.item_categories, full.item_text
                ),
                summary=summary,
            )
        overall = table.assign(segment="all")
        per_segment = evaluation.by_segment.rename(columns={"segment_name": "segment"})
        if len(per_segment):
            per_segment = per_segment.merge(
                table[["candidate", "model", "is_champion", "is_baseline"]], on="candidate"
            ).drop(columns=["segment_code"])
        metrics_rows = pd.concat([overall, per_segment], ignore_index=True).assign(
            params=lambda f: f["params"].map(
                lambda p: json.dumps(p, default=str) if isinstance(p, dict) else None
            ),
            as_of=as_of,
            split_date=split,
            run_id=context.run_id,
            model_run_id=model_run_id,
        )

        def state_and_metrics(con):
            save_state(con, full.user_ids, row_fingerprints(full), kept, refit=True)
            con.register("metrics_df", metrics_rows)
            con.execute(
                "create table if not exists recommendation_metrics as select * from metrics_df "
                "where false"
            )
            con.execute("delete from recommendation_metrics where as_of = $as_of", {"as_of": as_of})
            con.execute("insert into recommendation_metrics by name select * from metrics_df")

        with duckdb.get_connection() as con:
            n_rows, n_customers = write_lists(
                con,
                lists,
                full,
                model=champion.name,
                model_run_id=model_run_id,
                run_id=context.run_id,
                key=settings.key(),
                also=state_and_metrics,
            )
        phases.lap("tables written")
    similarity_meta = _item_similarities(duckdb, full, similar.result(), config, context.run_id)
    phases.lap("item similarities (rest)")
    timing = phases.report(context.log, "recommendations")
    ranking = table.sort_values("ndcg", ascending=False)[
        ["candidate", "ndcg", "precision", "recall", "map", "coverage", "is_champion"]
    ]
    yield dg.MaterializeResult(
        asset_key="customer_recommendations",
        metadata={
            "dagster/row_count": n_rows,
            "customers": n_customers,
            "refit": True,
            "refit_reason": why,
            "customers_rescored": full.shape[0],
            "customers_kept": 0,
            **summary,
            **timing,
            "model_run_id": model_run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key="recommendation_metrics",
        metadata={
            "dagster/row_count": len(metrics_rows),
            "split_date": str(split),
            "candidates": dg.MetadataValue.md(ranking.round(4).to_markdown(index=False)),
            "model_run_id": model_run_id,
        },
    )
    yield dg.MaterializeResult(asset_key="item_similarities", metadata=similarity_meta)


def _rescore(context, config, settings, duckdb, mlflow_tracking, kept: KeptModel, phases):
    """A night between refits: the kept model re-scores only the customers whose history
    changed (and those with no purchase); everyone else keeps last night's list."""
    import mlflow

    with duckdb.get_connection() as con:
        full = load_interactions(con, weights=config.weights.to_weights())
        available = _available(con)
    blocked = np.flatnonzero(~available)
    signature = catalogue_signature(
        kept.item_ids, full.item_ids, available, full.item_categories, full.item_text
    )
    fingerprints = row_fingerprints(full)
    phases.lap("full data")
    cold = np.diff(full.purchased.indptr) == 0
    unseen = kept.unseen_items(full.item_ids)
    if config.rescore_all or signature != kept.catalogue_signature:
        rescore = np.ones(full.shape[0], dtype=bool)
        scope = (
            "every customer (rescore_all)"
            if config.rescore_all
            else "every customer: the kept items' availability, categories or text changed"
        )
    else:
        with duckdb.get_connection() as con:
            changed = changed_customers(con, full.user_ids, fingerprints, config.n, unseen > 0)
        rescore = changed | cold
        scope = "customers whose history changed, and customers with no purchase"
    rows = np.flatnonzero(rescore)
    champion = kept.champion_for(full.item_ids)
    subset = full.take_users(rows)
    champion.fold_in(subset.weights)
    phases.lap("fold in")
    lists = _lists(champion, subset, full, config, blocked)
    lists.users = rows[lists.users]
    phases.lap("lists and reasons")
    with in_background(item_similarity_pairs, full, config.similarity) as similar:
        counts = {
            "customers_rescored": int(len(rows)),
            "customers_kept": int(full.shape[0] - len(rows)),
            "items_unseen_by_model": unseen,
        }
        with mlflow_tracking.start_run(context, "recommendations", run_name="rescoring"):
            mlflow.log_params(
                {
                    "model_run_id": kept.model_run_id,
                    "model_trained_as_of": str(kept.trained_as_of),
                    "rescored": scope[:500],
                    **{f"scoring_{k}": v for k, v in (champion.scoring_ or {}).items()},
                }
            )
            mlflow.log_metrics(counts)
        phases.lap("mlflow logging")
        with duckdb.get_connection() as con:
            n_rows, n_customers = write_lists(
                con,
                lists,
                full,
                model=champion.name,
                model_run_id=kept.model_run_id,
                run_id=context.run_id,
                key=settings.key(),
                reuse=full.user_ids[~rescore],
                also=lambda con: save_state(con, full.user_ids, fingerprints, refit=False),
            )
            n_metrics = con.execute("select count(*) from recommendation_metrics").fetchall()[0][0]
        phases.lap("tables written")
    similarity_meta = _item_similarities(duckdb, full, similar.result(), config, context.run_id)
    phases.lap("item similarities (rest)")
    context.log.info(f"recommendations: re-scored with the kept model {counts}")
    timing = phases.report(context.log, "recommendations")
    yield dg.MaterializeResult(
        asset_key="customer_recommendations",
        metadata={
            "dagster/row_count": n_rows,
            "customers": n_customers,
            "refit": False,
            "rescored": scope,
            **counts,
            **kept.summary,
            "model_trained_as_of": str(kept.trained_as_of),
            **timing,
            "model_run_id": kept.model_run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key="recommendation_metrics",
        metadata={
            "dagster/row_count": n_metrics,
            "evaluated_tonight": False,
            "model_trained_as_of": str(kept.trained_as_of),
            "model_run_id": kept.model_run_id,
        },
    )
    yield dg.MaterializeResult(asset_key="item_similarities", metadata=similarity_meta)


def _available(con) -> np.ndarray:
    """Each catalogue item's availability, in the matrix's column order (item_id order)."""
    flags = con.execute("select available from item_catalog order by item_id").fetchnumpy()
    return np.asarray(flags["available"], dtype=bool)


def _lists(champion, data, full, config: RecommendationConfig, blocked: np.ndarray):
    """``build_lists`` for the customers of ``data``, with the popularity and item support of
    ``full`` (everyone): the same inputs on a refit night and on the nights between, so a
    customer's list does not depend on who else is scored tonight."""
    repeatable = np.isin(full.item_ids, np.asarray(config.repeatable_items, dtype=object))
    return build_lists(
        champion,
        data,
        config.n,
        blocked=blocked,
        repeatable=np.flatnonzero(repeatable),
        max_per_category=config.max_per_category,
        fallback=SegmentPopularityRecommender(window_days=COLD_WINDOW_DAYS).fit(full),
        item_support=getattr(champion, "item_support_", None),
    )


def _item_similarities(duckdb: DuckDBResource, full, pairs, config: RecommendationConfig, run_id):
    with duckdb.get_connection() as con:
        return write_item_similarities(con, full.item_ids, pairs, config.similarity, run_id)


def _metric_dict(row: dict, k: int) -> dict[str, float]:
    at_k = ("precision", "recall", "f1", "ndcg", "map", "hit_rate")
    plain = ("mrr", "coverage", "diversity", "novelty", "fit_seconds")
    out = {}
    for m in at_k + plain:
        value = row.get(m)
        if value is not None and np.isfinite(value):
            out[f"{m}_at_{k}" if m in at_k else m] = float(value)
    return out
