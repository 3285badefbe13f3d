"""Segmentation's MLflow logging and charts, in one place.

The segmentation step logs its parent run (parameters, the chosen candidate's figures, one child
run per candidate, the charts, the candidates table and the registered segmenter); the report
step reads the charts back from that run, so the HTML report and MLflow show the same pictures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from seg_pipeline.defs.resources import MLflowTracking
from seg_pipeline.lib.segmentation import charts
from seg_pipeline.lib.segmentation.nightly import SEGMENTER_TRUSTED_TYPES, SegmentationNight
from seg_pipeline.lib.segmentation.value import ValueForecast, spend_totals

EXPERIMENT = "segmentation"
REGISTERED_MODEL = "seg_pipeline_segmenter"
# The charts drawn at selection time, in the report's order, with their artefact file names.
CHART_FILES = {
    "Segment sizes": "segment_sizes.png",
    "RFM grid": "rfm_grid.png",
    "Choosing the number of segments": "choosing_the_number_of_segments.png",
    "Dendrogram": "dendrogram.png",
}
MIGRATION_CHART = "Segment migration"
CALIBRATION_CHART = "Value forecast calibration"
VALUE_EXPERIMENT = "value_forecast"


def finite_figures(row: dict) -> dict[str, float]:
    """The numeric, finite entries of a candidate row, as MLflow metrics."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }


def selection_figures(night: SegmentationNight) -> dict:
    """The chosen model, its quality and forecast figures, and the RFM segments' and cells'."""
    chosen = night.sweep.chosen_row
    out = {"method": night.model_name, "segments": len(night.profiles)}
    for key in ("silhouette", "forecast_eta2", "forecast_omega2"):
        if key in chosen and np.isfinite(chosen[key]):
            out[key] = float(chosen[key])
    for col, (eta, omega) in night.rfm_eta.items():
        out[f"{col}_forecast_eta2"] = eta
        out[f"{col}_forecast_omega2"] = omega
    out["refit"] = night.sweep.method != "assigned"
    out["decision"] = night.sweep.decision or night.sweep.note or ""
    out.update(stability_figures(night))
    return out


def stability_figures(night: SegmentationNight) -> dict[str, float]:
    """Shares of quiet customers who kept their segment and their named RFM segment, per lag."""
    return night.kept_shares | {
        f"quiet_customers_{lag}": figures["customers"] for lag, figures in night.stability.items()
    }


def selection_charts(night: SegmentationNight, rfm: pd.DataFrame) -> dict[str, bytes]:
    """The charts of tonight's choice, keyed by their titles."""
    out = {
        "Segment sizes": charts.sizes_chart(night.profiles),
        "RFM grid": charts.rfm_heatmap(rfm),
    }
    if "silhouette" in night.sweep.table:
        out["Choosing the number of segments"] = charts.selection_chart(night.sweep.table)
    if night.sweep.linkage_matrix is not None:
        out["Dendrogram"] = charts.dendrogram_chart(night.sweep.linkage_matrix)
    return out


def segments_metadata(night: SegmentationNight, chart_pngs: dict[str, bytes]) -> dict:
    """``customer_segments``' metadata: the candidates table and the k-selection charts."""
    return {
        "dagster/row_count": night.n_customers,
        "candidates": dg.MetadataValue.md(night.sweep.table.round(4).to_markdown(index=False)),
        **chart_metadata(chart_pngs, ("Choosing the number of segments", "Dendrogram")),
    }


def profiles_metadata(night: SegmentationNight, chart_pngs: dict[str, bytes]) -> dict:
    """``segment_profiles``' metadata: the segments at a glance and their charts."""
    columns = ["segment_id", "segment_name", "n_customers", "share", "description"]
    return {
        "dagster/row_count": len(night.profiles),
        "segments_table": dg.MetadataValue.md(
            night.profiles[columns].round(3).to_markdown(index=False)
        ),
        **chart_metadata(chart_pngs, ("Segment sizes", "RFM grid")),
    }


def log_selection(
    context: dg.AssetExecutionContext,
    tracking: MLflowTracking,
    parent,
    night: SegmentationNight,
    chart_pngs: dict[str, bytes],
    params: dict,
) -> None:
    """Log the sweep under ``parent``: parameters, figures, a child run per candidate, the
    charts and tables as artefacts, and the segmenter as a registered model."""
    import mlflow

    sweep = night.sweep
    mlflow.log_params(
        {
            **params,
            "features": ",".join(night.features),
            "chosen": night.model_name,
            "n_customers": night.n_customers,
            "monetary_basis": night.basis,
        }
    )
    tracking.log_children(
        context,
        parent,
        [
            (
                f"{row['method']} {row['param']}",
                {"method": row["method"], "param": row["param"]},
                finite_figures({k: v for k, v in row.items() if isinstance(v, int | float)}),
            )
            for row in sweep.rows
        ],
    )
    mlflow.log_metrics(finite_figures(sweep.chosen_row))
    mlflow.log_metrics(stability_figures(night))
    mlflow.set_tag("decision", (sweep.decision or "")[:500])
    for col, (eta, omega) in night.rfm_eta.items():
        mlflow.log_metrics({f"{col}_forecast_eta2": eta, f"{col}_forecast_omega2": omega})
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in chart_pngs.items():
            Path(tmp, CHART_FILES[name]).write_bytes(png)
        sweep.table.to_csv(Path(tmp, "candidates.csv"), index=False)
        night.profiles.drop(columns=["label"]).to_csv(
            Path(tmp, "segment_profiles.csv"), index=False
        )
        mlflow.log_artifacts(tmp, artifact_path="report")
    if night.sweep.note:
        mlflow.set_tag("degraded", night.sweep.note[:500])
    if night.segmenter is None:  # a single segment: nothing to assign with
        return
    mlflow.sklearn.log_model(
        night.segmenter,
        name="segmenter",
        pip_requirements=["scikit-learn"],
        registered_model_name=REGISTERED_MODEL,
        skops_trusted_types=SEGMENTER_TRUSTED_TYPES,
    )


def logged_charts(tracking: MLflowTracking, model_run_id: str) -> dict[str, bytes]:
    """The charts the selection run logged, in the report's order."""
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(
            download_artifacts(
                run_id=model_run_id,
                artifact_path="report",
                dst_path=tmp,
                tracking_uri=tracking.tracking_uri,
            )
        )
        return {
            name: (folder / file).read_bytes()
            for name, file in CHART_FILES.items()
            if (folder / file).exists()
        }


def migration_chart(migration: pd.DataFrame) -> bytes | None:
    """Behavioural segment migration as a from × to matrix; None when there is one date only."""
    if not len(migration) or not migration["from_date"].notna().any():
        return None
    matrix = migration.pivot_table(
        index="from_segment",
        columns="to_segment",
        values="n_customers",
        aggfunc="sum",
        fill_value=0,
    )
    return charts.migration_chart(matrix, MIGRATION_CHART)


def log_value_forecast(value: ValueForecast, horizon: int | None) -> None:
    """Log the value forecast's settings, out-of-fold figures, calibration table and chart."""
    import mlflow

    mlflow.log_params({"horizon_days": horizon, "n_customers": len(value.forecast)})
    mlflow.log_metrics(finite_figures(value.figures))
    with tempfile.TemporaryDirectory() as tmp:
        value.calibration.to_csv(Path(tmp, "calibration.csv"), index=False)
        Path(tmp, "calibration.png").write_bytes(charts.calibration_chart(value.calibration))
        mlflow.log_artifacts(tmp, artifact_path="calibration")


def value_metadata(value: ValueForecast) -> dict:
    """The forecast's figures and its calibration table and chart, for the Dagster UI."""
    png = charts.calibration_chart(value.calibration)
    return {
        **{k: float(v) for k, v in value.figures.items()},
        "expected_revenue": float(value.forecast["expected_spend"].sum()),
        "calibration": dg.MetadataValue.md(value.calibration.round(3).to_markdown(index=False)),
        CALIBRATION_CHART: dg.MetadataValue.md(charts.markdown_image(png, CALIBRATION_CHART)),
    }


def log_report(
    context: dg.AssetExecutionContext,
    tracking: MLflowTracking,
    path: Path,
    model_run_id: str,
    calibration: pd.DataFrame,
) -> None:
    """Attach the HTML report to the selection run, as a child run, with the value forecast's
    calibration by decile, so that the selection run shows it beside the segments' figures."""
    import mlflow

    with tracking.start_run(context, EXPERIMENT, run_name="report", parent_run_id=model_run_id):
        mlflow.log_artifact(str(path), artifact_path="report")
        if len(calibration):
            mlflow.log_metric("value_spend_ratio", spend_totals(calibration)[2])
            with tempfile.TemporaryDirectory() as tmp:
                calibration.to_csv(Path(tmp, "value_calibration.csv"), index=False)
                mlflow.log_artifact(str(Path(tmp, "value_calibration.csv")), artifact_path="report")


def chart_metadata(chart_pngs: dict[str, bytes], names: tuple[str, ...]) -> dict:
    """Charts as Markdown images for the Dagster UI, for those of ``names`` that were drawn."""
    return {
        name: dg.MetadataValue.md(charts.markdown_image(png, name))
        for name, png in chart_pngs.items()
        if name in names
    }
