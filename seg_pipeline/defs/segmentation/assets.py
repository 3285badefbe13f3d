"""Behavioural segments: the nightly sweep and its report, as thin assets over
``seg_pipeline.lib.segmentation`` (the decision is ``nightly.segment_customers``)."""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.resources import MLflowTracking, PipelineSettings
from seg_pipeline.defs.segmentation import tracking
from seg_pipeline.lib.parallel import in_background
from seg_pipeline.lib.segmentation import charts, tables
from seg_pipeline.lib.segmentation.nightly import segment_customers
from seg_pipeline.lib.segmentation.report import report_facts, report_html
from seg_pipeline.lib.segmentation.selection import METHODS
from seg_pipeline.lib.segmentation.sweep import SweepSettings
from seg_pipeline.lib.segmentation.value import forecast_value, horizon_days
from seg_pipeline.lib.spark import segments as spark_segments
from seg_pipeline.lib.timing import PhaseTimer


class SegmentationConfig(dg.Config):
    """Which methods to sweep, over which sizes, and how to choose."""

    methods: list[str] = Field(
        default=["kmeans", "gmm", "agglomerative", "tree"],
        description=f"Methods to sweep, from {', '.join(METHODS)}.",
    )
    linkage: str = Field(
        default="ward", description="Agglomerative linkage: ward, complete, average or single."
    )
    features: list[str] = Field(
        default=["rfm", "behaviour"],
        description="Feature spaces to sweep: 'rfm' (log recency, frequency, spend) and "
        "'behaviour' (RFM plus tenure, order value, interval, returns, category mix, trend). "
        "The choice between them is made by the same rule as between methods.",
    )
    scaling: str = Field(default="robust", description="'robust' or 'standard' scaling.")
    k_min: int = Field(
        default=3,
        description="Smallest number of segments tried. Silhouette nearly always favours k=2 on "
        "customer data (buyers vs. lapsed), which is too coarse to act on.",
    )
    k_max: int = Field(default=10, description="Largest number of segments tried.")
    max_segments: int = Field(default=10, description="Never publish more segments than this.")
    min_share: float = Field(
        default=0.02, description="Smallest segment share a candidate may have."
    )
    silhouette_tolerance: float = Field(
        default=0.1, description="Candidates this close to the best silhouette compete on forecast."
    )
    silhouette_sample: int = Field(
        default=3_000,
        description="Customers sampled for silhouette and Davies-Bouldin (cost is quadratic).",
    )
    fit_sample: int = Field(default=5_000, description="Customers agglomerative/HDBSCAN fit on.")
    selection_sample: int = Field(
        default=20_000,
        description="Above this many customers the sweep runs on a sample and everyone is then "
        "assigned to the nearest centroid of the chosen model.",
    )
    refit: bool = Field(
        default=True,
        description="Refit the segments when the refit rule calls for it (no stored segments, "
        "they are refit_after_days old, refit_changed_share of customers bought since, or their "
        "forecast power fell by change_margin); otherwise customers are assigned to the stored "
        "segments. Off: always assign to the stored segments.",
    )
    refit_after_days: int = Field(
        default=28, description="Refit segments that are this many days old."
    )
    keep_margin: float = Field(
        default=0.25,
        description="Between refits, a customer who bought nothing since the last night moves "
        "to another (cluster) segment only when it is nearer by more than this (scaled units); "
        "0 assigns everyone to the nearest centroid.",
    )
    refit_changed_share: float = Field(
        default=0.25,
        description="Refit when this share of today's customers bought (or first appeared) "
        "since the segments were fitted. A refit redraws the boundaries for everyone, so it "
        "waits for a real change in the population; refit_after_days bounds the wait.",
    )
    change_margin: float = Field(
        default=0.02,
        description="On a refit, keep yesterday's method and size unless a candidate forecasts "
        "better by more than this omega squared; between refits, refit when the stored segments' "
        "omega squared falls by more than this.",
    )
    match_distance: float = Field(
        default=1.0,
        description="Centroid distance (scaled units) "
        "within which a segment keeps yesterday's id and name.",
    )
    random_state: int = Field(default=42, description="Seed for every model and sample.")

    def tracking_params(self) -> dict:
        """The settings logged with the selection run."""
        return {
            "methods": ",".join(self.methods),
            "scaling": self.scaling,
            "k_range": f"{self.k_min}-{self.k_max}",
            "refit": self.refit,
            "refit_after_days": self.refit_after_days,
            "refit_changed_share": self.refit_changed_share,
        }

    def to_settings(self) -> SweepSettings:
        values = self.model_dump()
        return SweepSettings(
            **{**values, "methods": tuple(self.methods), "features": tuple(self.features)}
        )


_SPEC = {"deps": ["customer_features", "customer_rfm"], "group_name": "segmentation"}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "customer_segments", description="Each purchasing customer's segment.", **_SPEC
        ),
        dg.AssetSpec(
            "segment_profiles",
            description="Size, statistics, name and description of each segment.",
            **_SPEC,
        ),
    ],
    can_subset=False,
)
def behavioural_segments(
    context: dg.AssetExecutionContext,
    config: SegmentationConfig,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    mlflow_tracking: MLflowTracking,
    engine: SqlEngine,
):
    """Sweep clustering candidates, choose by silhouette and forecast power, keep ids stable."""
    phases = PhaseTimer()
    mlflow_tracking.preload_model_logging()
    with duckdb.get_connection() as con:
        rfm = tables.load_rfm(con)
        previous = tables.load_stored_model(con)
        as_of = rfm["as_of"].iloc[0] if len(rfm) else None
        last_night = tables.load_last_night(con)
        if engine.is_spark:
            # The night is decided on a sample; everyone is assigned in Spark below.
            current, holdout = spark_segments.samples(
                engine.session(), engine.work_schema, config.selection_sample, config.random_state
            )
            history = None
        else:
            current = tables.load_features(con, "current")
            holdout = tables.load_features(con, "holdout")
            history = tables.load_recent_history(con, as_of)
    phases.lap("features loaded")
    try:
        night = segment_customers(
            current,
            holdout,
            previous,
            config.to_settings(),
            as_of=as_of,
            basis=str(rfm["monetary_basis"].iloc[0]) if len(rfm) else "revenue",
            history=history,
            last_night=last_night,
            warn=context.log.warning,
        )
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    if engine.is_spark:
        night = spark_segments.in_spark(
            engine.session(),
            engine.work_schema,
            night,
            last_night_as_of=None if last_night is None else last_night[1],
            keep_margin=config.keep_margin,
            horizon_days=horizon_days(current, holdout),
        )
    sweep = night.sweep
    context.log.info(f"refitting the segments: {sweep.refit}" if sweep.refit else sweep.kept)
    phases.lap("candidates, assignment and profiles")
    with mlflow_tracking.start_run(
        context, tracking.EXPERIMENT, run_name="segment_selection"
    ) as parent:
        model_run_id = parent.info.run_id
        # DuckDB writes the tables on a second thread while this one draws and logs.
        with in_background(
            _write_tables, duckdb, night, model_run_id, context.run_id, not engine.is_spark
        ) as written:
            chart_pngs = tracking.selection_charts(night, rfm)
            tracking.log_selection(
                context, mlflow_tracking, parent, night, chart_pngs, config.tracking_params()
            )
            written.result()
    if engine.is_spark:
        spark_segments.write_customer_segments(
            engine.session(),
            engine.work_schema,
            night,
            model_run_id=model_run_id,
            run_id=context.run_id,
        )
    with duckdb.get_connection() as con:
        engine.share(con, ["segment_profiles"], settings.work_path)
        # The recommender's segment popularity and the checks read them on the driver.
        engine.collect(con, ["customer_segments"], settings.work_path)
    phases.lap("charts, mlflow logging and tables written")
    figures = {
        **tracking.selection_figures(night),
        "model_run_id": model_run_id,
        **phases.report(context.log, "behavioural_segments"),
    }
    yield dg.MaterializeResult(
        asset_key="customer_segments",
        metadata={**figures, **tracking.segments_metadata(night, chart_pngs)},
    )
    yield dg.MaterializeResult(
        asset_key="segment_profiles", metadata=tracking.profiles_metadata(night, chart_pngs)
    )


@dg.asset(deps=["customer_features"], group_name="segmentation")
def customer_value_forecast(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    mlflow_tracking: MLflowTracking,
    engine: SqlEngine,
) -> dg.MaterializeResult:
    """Each customer's expected spend and chance of buying in the next period, learnt from what
    customers did after the holdout cut, with its calibration."""
    with duckdb.get_connection() as con:
        current = tables.load_features(con, "current")
        holdout = tables.load_features(con, "holdout")
    value = forecast_value(current, holdout)
    horizon = horizon_days(current, holdout)
    model_run_id = None
    if value is None:
        context.log.warning("fewer than 50 customers at the holdout cut: no value forecast")
    else:
        with mlflow_tracking.start_run(context, tracking.VALUE_EXPERIMENT) as run:
            model_run_id = run.info.run_id
            tracking.log_value_forecast(value, horizon)
    with duckdb.get_connection() as con:
        tables.write_value_forecast(
            con, value, horizon=horizon, model_run_id=model_run_id, run_id=context.run_id
        )
        engine.share(con, ["customer_value_forecast"], settings.work_path)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": 0 if value is None else len(value.forecast),
            "horizon_days": horizon,
            **({} if value is None else tracking.value_metadata(value)),
        }
    )


def _write_tables(
    duckdb: DuckDBResource, night, model_run_id: str, run_id: str, with_segments: bool
) -> None:
    with duckdb.get_connection() as con:
        tables.write_segment_tables(
            con, night, model_run_id=model_run_id, run_id=run_id, with_segments=with_segments
        )


@dg.asset(
    deps=["segment_profiles", "segment_migration", "customer_segments", "customer_value_forecast"],
    group_name="segmentation",
)
def segment_report(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    mlflow_tracking: MLflowTracking,
) -> dg.MaterializeResult:
    """A self-contained HTML report of tonight's segments, charts and migration, beside the
    published database."""
    with duckdb.get_connection() as con:
        profiles, run, migration = tables.load_report_inputs(con)
        calibration = tables.load_calibration(con)
    model_run_id = str(profiles["model_run_id"].iloc[0])
    chart_pngs = tracking.logged_charts(mlflow_tracking, model_run_id)
    migration_png = tracking.migration_chart(migration)
    if migration_png is not None:
        chart_pngs[tracking.MIGRATION_CHART] = migration_png
    if len(calibration):
        chart_pngs[tracking.CALIBRATION_CHART] = charts.calibration_chart(calibration)
    path = settings.published_path.with_name(settings.published_path.stem + "_segment_report.html")
    path.write_text(
        report_html("Customer segments", profiles, chart_pngs, report_facts(run, calibration))
    )
    tracking.log_report(context, mlflow_tracking, path, model_run_id, calibration)
    return dg.MaterializeResult(
        metadata={
            "path": str(path),
            "model_run_id": model_run_id,
            "migration_rows": len(migration),
            **tracking.chart_metadata(chart_pngs, (tracking.MIGRATION_CHART,)),
        }
    )
