"""Behavioural segments from K-Means on scaled, log-transformed RFM features."""

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource
from pydantic import Field
from sklearn.pipeline import make_pipeline

from seg_pipeline.defs.resources import MLflowTracking
from seg_pipeline.lib import plots
from seg_pipeline.lib.segmentation.features import rfm_matrix, scale
from seg_pipeline.lib.segmentation.profiles import profile_segments
from seg_pipeline.lib.segmentation.selection import select_kmeans


class SegmentationConfig(dg.Config):
    """How many segments to consider and how to score them."""

    k_min: int = Field(
        default=3,
        description="Smallest number of segments tried. Silhouette nearly always favours k=2 on "
        "RFM data (buyers vs. lapsed), which is too coarse to act on, so the default starts at 3.",
    )
    k_max: int = Field(
        default=10, description="Largest number of segments tried (at most 10 by default)."
    )
    silhouette_sample: int = Field(
        default=10_000, description="Customers sampled for the silhouette."
    )
    min_share: float = Field(
        default=0.02, description="A k whose smallest segment is below this share is not chosen."
    )
    random_state: int = Field(default=42, description="Seed for K-Means and sampling.")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "customer_segments",
            deps=["customer_rfm"],
            group_name="segmentation",
            description="Each purchasing customer's behavioural segment.",
        ),
        dg.AssetSpec(
            "segment_profiles",
            deps=["customer_rfm"],
            group_name="segmentation",
            description="Size, RFM statistics, name and description of each segment.",
        ),
    ],
    can_subset=False,
)
def behavioural_segments(
    context: dg.AssetExecutionContext,
    config: SegmentationConfig,
    duckdb: DuckDBResource,
    mlflow_tracking: MLflowTracking,
):
    """Cluster customers on RFM with K-Means, choosing k by silhouette, and name the clusters."""
    import mlflow

    with duckdb.get_connection() as con:
        rfm = con.execute(
            "select customer_id, recency_days, frequency, monetary, monetary_basis "
            "from customer_rfm order by customer_id"
        ).df()
    if len(rfm) < 3:
        raise dg.Failure(f"only {len(rfm)} purchasing customers: too few to segment")
    basis = str(rfm["monetary_basis"].iloc[0])
    x, scaler = scale(rfm_matrix(rfm))
    selection = select_kmeans(
        x,
        range(config.k_min, config.k_max + 1),
        random_state=config.random_state,
        sample_size=config.silhouette_sample,
        min_share=config.min_share,
    )
    profiles = profile_segments(rfm, selection.labels, basis=basis)
    segment_of_label = dict(zip(profiles["label"], profiles["segment_id"], strict=True))
    name_of_label = dict(zip(profiles["label"], profiles["segment_name"], strict=True))
    chosen = selection.candidates.loc[selection.candidates["chosen"]].iloc[0]
    selection_png = plots.selection_chart(selection.candidates)
    sizes_png = plots.sizes_chart(profiles)

    with mlflow_tracking.start_run(context, "segmentation", run_name="kmeans") as parent:
        mlflow.log_params(
            {
                "method": "kmeans",
                "k_min": config.k_min,
                "k_max": config.k_max,
                "features": "log recency, frequency, monetary; standard-scaled",
                "n_customers": len(rfm),
                "monetary_basis": basis,
                "random_state": config.random_state,
            }
        )
        for row in selection.candidates.itertuples():
            with mlflow_tracking.start_run(
                context,
                "segmentation",
                run_name=f"kmeans_k{row.k}",
                parent_run_id=parent.info.run_id,
            ):
                mlflow.log_param("k", row.k)
                mlflow.log_metrics(
                    {
                        m: float(getattr(row, m))
                        for m in (
                            "silhouette",
                            "davies_bouldin",
                            "calinski_harabasz",
                            "inertia",
                            "min_share",
                        )
                        if np.isfinite(getattr(row, m))
                    }
                )
        mlflow.log_metrics(
            {
                "chosen_k": selection.best_k,
                "silhouette": float(chosen["silhouette"]),
                "inertia": float(chosen["inertia"]),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "k_selection.png").write_bytes(selection_png)
            Path(tmp, "segment_sizes.png").write_bytes(sizes_png)
            profiles.drop(columns=["label"]).to_csv(Path(tmp, "segment_profiles.csv"), index=False)
            mlflow.log_artifacts(tmp, artifact_path="report")
        mlflow.sklearn.log_model(
            make_pipeline(scaler, selection.model), name="model", pip_requirements=["scikit-learn"]
        )
        model_run_id = parent.info.run_id

    segments = rfm[["customer_id"]].copy()
    segments["segment_id"] = [segment_of_label[label] for label in selection.labels]
    segments["segment_name"] = [name_of_label[label] for label in selection.labels]
    segments["method"] = "kmeans"
    segments["model_run_id"] = model_run_id
    segments["run_id"] = context.run_id
    table = profiles.drop(columns=["label"]).assign(
        method="kmeans", model_run_id=model_run_id, run_id=context.run_id
    )
    with duckdb.get_connection() as con:
        con.register("segments_df", segments)
        con.register("profiles_df", table)
        con.execute("begin transaction")
        con.execute(
            "create or replace table customer_segments as "
            "select *, now()::timestamp as assigned_at from segments_df"
        )
        con.execute(
            """
            create or replace table segment_profiles as
            select segment_id, segment_name, n_customers::bigint as n_customers, share,
                   mean_recency_days, mean_frequency, mean_monetary,
                   median_recency_days, median_frequency, median_monetary,
                   description, method, model_run_id, run_id
            from profiles_df
            """
        )
        con.execute("commit")

    figures = {
        "k": selection.best_k,
        "silhouette": float(chosen["silhouette"]),
        "model_run_id": model_run_id,
    }
    yield dg.MaterializeResult(
        asset_key="customer_segments",
        metadata={
            **figures,
            "dagster/row_count": len(segments),
            "k_selection": dg.MetadataValue.md(
                plots.markdown_image(selection_png, "silhouette and elbow")
            ),
            "candidates": dg.MetadataValue.md(
                selection.candidates.round(4).to_markdown(index=False)
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key="segment_profiles",
        metadata={
            **figures,
            "dagster/row_count": len(table),
            "segments": dg.MetadataValue.md(
                table[["segment_id", "segment_name", "n_customers", "share", "description"]]
                .round(3)
                .to_markdown(index=False)
            ),
            "sizes": dg.MetadataValue.md(plots.markdown_image(sizes_png, "segment sizes")),
        },
    )
