"""Behavioural segments: a sweep of clustering candidates, chosen for quality and for forecasting.

Thin on purpose: the numerical work lives in ``seg_pipeline.lib.segmentation``; this asset loads
the features, runs the sweep, keeps segment ids stable against the previous run, and writes the
segment tables, the history and the migration tables, the charts and the HTML report.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from seg_pipeline.defs.resources import MLflowTracking, PipelineSettings
from seg_pipeline.lib import plots
from seg_pipeline.lib.parallel import each_in_threads, in_background
from seg_pipeline.lib.segmentation.features import (
    CLIP,
    FEATURE_SETS,
    RFM_FEATURES,
    SKEWED,
    prepare,
    transform_columns,
    winsorise,
)
from seg_pipeline.lib.segmentation.forecast import forecast_power, log_target
from seg_pipeline.lib.segmentation.identity import match_segments, next_ids
from seg_pipeline.lib.segmentation.profiles import profile_segments
from seg_pipeline.lib.segmentation.report import segment_report
from seg_pipeline.lib.segmentation.selection import (
    METHODS,
    candidate_params,
    centroids_of,
    choose,
    contenders,
    fit_candidate,
    nearest_centroid,
)
from seg_pipeline.lib.timing import PhaseTimer

REGISTERED_MODEL = "seg_pipeline_segmenter"


class SegmentationConfig(dg.Config):
    """Which methods to sweep, over which sizes, and how to choose."""

    methods: list[str] = Field(
        default=["kmeans", "gmm", "agglomerative"],
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
        description="Re-fit tonight; off: assign customers to the "
        "stored segments without re-fitting.",
    )
    change_margin: float = Field(
        default=0.02,
        description="Keep yesterday's method and size unless a candidate forecasts better by more "
        "than this omega squared.",
    )
    match_distance: float = Field(
        default=1.0,
        description="Centroid distance (scaled units) "
        "within which a segment keeps yesterday's id and name.",
    )
    random_state: int = Field(default=42, description="Seed for every model and sample.")


def _frame(con, query: str, params: dict | None = None) -> pd.DataFrame:
    """A query's result as pandas through Arrow: text stays Arrow-backed instead of becoming a
    Python object per value (``.df()`` took 1.8 s instead of 0.4 s for 840k customers)."""
    frame = con.sql(query, params=params).to_arrow_table().to_pandas(date_as_object=False)
    for column in frame.columns:
        if frame[column].dtype == "datetime64[ms]":  # Arrow dates; DuckDB's .df() gives us
            frame[column] = frame[column].astype("datetime64[us]")
    return frame


def _load(con, snapshot: str) -> pd.DataFrame:
    # Money comes as DOUBLE: DECIMAL columns arrive as Python Decimal objects, which made loading
    # and the profiles' group means slow at a million customers.
    return _frame(
        con,
        """
        select * replace (monetary::double as monetary,
                          next_period_value::double as next_period_value)
        from customer_features where snapshot = $s order by customer_id
        """,
        {"s": snapshot},
    )


def _previous_model(con) -> pd.DataFrame | None:
    exists = con.execute(
        "select count(*) from information_schema.tables where table_name = 'segment_centroids'"
    ).fetchall()[0][0]
    return (
        con.execute("select * from segment_centroids order by segment_id").df() if exists else None
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "customer_segments",
            deps=["customer_features", "customer_rfm"],
            group_name="segmentation",
            description="Each purchasing customer's segment.",
        ),
        dg.AssetSpec(
            "segment_profiles",
            deps=["customer_features", "customer_rfm"],
            group_name="segmentation",
            description="Size, statistics, name and description of each segment.",
        ),
        dg.AssetSpec(
            "segment_history",
            deps=["customer_features", "customer_rfm"],
            group_name="segmentation",
            description="Every customer's segment and RFM segment per run date.",
        ),
        dg.AssetSpec(
            "segment_migration",
            deps=["customer_features", "customer_rfm"],
            group_name="segmentation",
            description="Customers moving between segments across the last two dates.",
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
):
    """Sweep clustering candidates, choose by silhouette and forecast power, keep ids stable."""
    import mlflow

    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown:
        raise dg.Failure(f"unknown segmentation method(s) {unknown}; use {list(METHODS)}")
    phases = PhaseTimer()
    mlflow_tracking.preload_model_logging()
    with duckdb.get_connection() as con:
        current = _load(con, "current")
        holdout = _load(con, "holdout")
        rfm = _frame(
            con,
            "select customer_id, r_score, f_score, m_score, monetary::double as monetary, "
            "rfm_segment, monetary_basis, as_of from customer_rfm order by customer_id",
        )
        previous = _previous_model(con)
    if len(current) < 3:
        raise dg.Failure(f"only {len(current)} purchasing customers: too few to segment")
    phases.lap("features loaded")
    as_of = rfm["as_of"].iloc[0]
    basis = str(rfm["monetary_basis"].iloc[0])
    unknown_sets = sorted(set(config.features) - set(FEATURE_SETS))
    if unknown_sets:
        raise dg.Failure(f"unknown feature set(s) {unknown_sets}; use {list(FEATURE_SETS)}")

    def prepare_space(name: str) -> dict:
        x, scaler, feats, raw = prepare(current, FEATURE_SETS[name], config.scaling)
        x_hold = prepare(holdout, feats, config.scaling)[0] if len(holdout) > 20 else None
        return {"x": x, "scaler": scaler, "features": feats, "raw": raw, "x_hold": x_hold}

    # The spaces, and the fixed log-RFM space in which segments are matched to yesterday's
    # whatever space wins, are prepared one per core: numpy releases the GIL in the logs and
    # the scalers' sorts (one core sat idle through 3 s of this at 10M events).
    *prepared, identity = each_in_threads(
        lambda name: prepare_space(name) if name else prepare(current, RFM_FEATURES, "standard"),
        [*config.features, None],
    )
    spaces = dict(zip(config.features, prepared, strict=True))
    identity_x, identity_scaler, _, identity_raw = identity
    y_hold = (
        log_target(holdout["next_period_value"].to_numpy(dtype=float)) if len(holdout) else None
    )
    opts = {
        "random_state": config.random_state,
        "sample_size": config.silhouette_sample,
        "fit_sample_size": config.fit_sample,
        "linkage": config.linkage,
    }

    has_previous = previous is not None and len(previous) > 0
    rows, candidates = [], []
    rng = np.random.default_rng(config.random_state)
    sel = np.sort(
        rng.choice(len(current), min(config.selection_sample, len(current)), replace=False)
    )
    hold_sel = np.sort(
        rng.choice(len(holdout), min(config.selection_sample, len(holdout)), replace=False)
    )
    if config.refit or not has_previous:
        # The sweep's samples, taken once per feature space rather than once per candidate.
        sampled = {
            name: (space["x"][sel], None if space["x_hold"] is None else space["x_hold"][hold_sel])
            for name, space in spaces.items()
        }
        y_sampled = y_hold[hold_sel] if y_hold is not None else None

        def fit_one(space_name: str, method: str, param) -> tuple[dict, object] | str:
            try:
                cand = fit_candidate(sampled[space_name][0], method, param, **opts)
            except ValueError as exc:
                return f"{method} {param}: {exc}"
            return {
                "features": space_name,
                "method": method,
                "param": cand.param,
                **cand.metrics,
            }, cand

        def forecast_one(space_name: str, method: str, param, n_segments: int) -> tuple:
            # The same method and size fitted on the holdout snapshot: do its segments
            # separate the spend that followed?
            hold_param = n_segments if method != "hdbscan" else param
            hold = fit_candidate(sampled[space_name][1], method, hold_param, score=False, **opts)
            return forecast_power(hold.labels, y_sampled)

        jobs = [
            (space_name, method, param)
            for space_name in spaces
            for method in config.methods
            for param in candidate_params(method, range(config.k_min, config.k_max + 1), len(sel))
        ]
        # Candidates are independent: one per core, each single-threaded inside (the samples
        # are small, so sklearn's own threads mostly wait). Results keep the job order.
        results = each_in_threads(lambda job: fit_one(*job), jobs)
        fitted_jobs = []  # the job behind each row of ``rows``
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, str):
                context.log.warning(result)
            else:
                rows.append(result[0])
                candidates.append(result[1])
                fitted_jobs.append(job)
        selection_rule = {
            "max_segments": config.max_segments,
            "min_share": config.min_share,
            "silhouette_tolerance": config.silhouette_tolerance,
        }
        # Forecast power decides only among the contenders (selection.contenders), so only
        # they get the holdout fit: 26 of 48 candidates at 10M events.
        forecast_jobs = []
        if y_sampled is not None and rows:
            for i in contenders(pd.DataFrame(rows), **selection_rule).index:
                space_name, method, param = fitted_jobs[i]
                if sampled[space_name][1] is not None and candidates[i].n_segments >= 2:
                    forecast_jobs.append((i, (space_name, method, param, candidates[i].n_segments)))
        forecasts = each_in_threads(lambda job: forecast_one(*job[1]), forecast_jobs)
        for (i, _), (eta2, omega2) in zip(forecast_jobs, forecasts, strict=True):
            rows[i]["forecast_eta2"], rows[i]["forecast_omega2"] = eta2, omega2
        table = pd.DataFrame(rows)
        incumbent = None
        if has_previous and "feature_space" in previous:
            method_param = str(previous["method"].iloc[0]).split(" ", 1)
            incumbent = {
                "features": previous["feature_space"].iloc[0],
                "method": method_param[0],
                "param": method_param[-1],
            }
        chosen_idx = choose(
            table,
            **selection_rule,
            incumbent=incumbent,
            margin=config.change_margin,
        )
        table["chosen"] = table.index == chosen_idx
        chosen = candidates[chosen_idx]
        method, param = chosen.method, chosen.param
        space_name_chosen = table.loc[chosen_idx, "features"]
        space = spaces[space_name_chosen]
        features, scaler, raw = space["features"], space["scaler"], space["raw"]
        # The sweep may have run on a sample: everyone goes to the nearest chosen centroid.
        x_final = space["x"]
        centroids, labels = centroids_of(x_final, nearest_centroid(x_final, chosen.centroids))
    else:
        # Between re-fits: yesterday's segments, today's customers, nearest stored centroid,
        # in yesterday's feature space (scaled on today's customers).
        features = tuple(json.loads(previous["features"].iloc[0]))
        space_name_chosen = (
            previous["feature_space"].iloc[0] if "feature_space" in previous else "stored"
        )
        x, scaler, _, raw = prepare(current, features, config.scaling)
        stored = np.vstack(previous["centroid"].map(np.asarray).to_list())
        centroids = np.clip(scaler.transform(stored), -CLIP, CLIP)
        labels = nearest_centroid(x, centroids)
        x_final = x
        method, param = "assigned", str(previous["method"].iloc[0])
        table = pd.DataFrame(
            [{"method": method, "param": param, "n_segments": len(centroids), "chosen": True}]
        )
        chosen = None

    phases.lap("candidates and assignment")
    # Stable identity: inherit ids and names from yesterday's matching segments.
    profiles = profile_segments(current, labels, basis=basis)
    label_order = profiles["label"].to_numpy()
    if has_previous:
        prev_scaled = identity_scaler.transform(
            np.vstack(previous["rfm_centroid"].map(np.asarray).to_list())
        )
        today = np.vstack([identity_x[labels == label].mean(axis=0) for label in label_order])
        inherited = match_segments(
            today,
            prev_scaled,
            previous["segment_id"].tolist(),
            max_distance=config.match_distance,
        )
        prev_names = dict(zip(previous["segment_id"], previous["segment_name"], strict=True))
    else:
        inherited, prev_names = [None] * len(profiles), {}
    fresh = iter(next_ids([i for i in inherited if i] + list(prev_names), inherited.count(None)))
    ids = [i if i else next(fresh) for i in inherited]
    names = [prev_names.get(i, n) for i, n in zip(ids, profiles["segment_name"], strict=True)]
    names = _unique(names, ids, inherited)
    profiles["segment_id"], profiles["segment_name"] = ids, names
    profiles = profiles.sort_values("segment_id", key=lambda s: s.str[1:].astype(int))
    segment_of = dict(zip(profiles["label"], profiles["segment_id"], strict=True))
    name_of = dict(zip(profiles["label"], profiles["segment_name"], strict=True))

    rfm_eta = {}
    if y_hold is not None and len(holdout):
        for col in ("rfm_segment", "rfm_cell"):
            rfm_eta[col] = forecast_power(holdout[col].to_numpy(), y_hold)
    chosen_row = table.loc[table["chosen"]].iloc[0].to_dict()

    phases.lap("profiles")
    with mlflow_tracking.start_run(context, "segmentation", run_name="segment_selection") as parent:
        model_run_id = parent.info.run_id
        segments = current[["customer_id"]].copy()
        segments["segment_id"] = [segment_of[label] for label in labels]
        segments["segment_name"] = [name_of[label] for label in labels]
        segments["method"] = method
        segments["model_run_id"] = model_run_id
        segments["run_id"] = context.run_id
        table_out = profiles.drop(columns=["label"]).assign(
            method=method, model_run_id=model_run_id, run_id=context.run_id
        )
        raw_centroids = np.vstack([raw[labels == label].mean(axis=0) for label in label_order])
        rfm_centroids = np.vstack(
            [identity_raw[labels == label].mean(axis=0) for label in label_order]
        )
        # Centroids are kept before scaling: tomorrow's scaler maps them into tomorrow's space.
        stored = pd.DataFrame(
            {
                "segment_id": [segment_of[label] for label in label_order],
                "segment_name": [name_of[label] for label in label_order],
                "centroid": [list(map(float, c)) for c in raw_centroids],
                "rfm_centroid": [list(map(float, c)) for c in rfm_centroids],
                "features": json.dumps(list(features)),
                "method": f"{method} {param}",
                "feature_space": space_name_chosen,
                "as_of": as_of,
                "run_id": context.run_id,
            }
        )
        run_row = {
            "a": as_of,
            "r": context.run_id,
            "m": method,
            "p": param,
            "n": len(profiles),
            "s": chosen_row.get("silhouette"),
            "e": chosen_row.get("forecast_eta2"),
            "o": chosen_row.get("forecast_omega2"),
            "re": rfm_eta.get("rfm_segment", (None, None))[0],
            "ce": rfm_eta.get("rfm_cell", (None, None))[0],
        }
        # The tables need only the run id, so DuckDB writes them on a second thread while this
        # one draws the charts and logs to MLflow; both are mostly single-threaded (at 10M
        # events one core sat idle through 2 s of charts, 5-6 s of logging, 2-3 s of writing).
        with in_background(_write_tables, duckdb, segments, table_out, stored, run_row) as written:
            charts = {
                "Segment sizes": plots.sizes_chart(profiles),
                "RFM grid": plots.rfm_heatmap(rfm),
            }
            if "silhouette" in table:
                charts["Choosing the number of segments"] = plots.selection_chart(table)
            tree = next(
                (c.linkage_matrix for c in candidates if c.linkage_matrix is not None), None
            )
            if tree is not None:
                charts["Dendrogram"] = plots.dendrogram_chart(tree)
            mlflow.log_params(
                {
                    "methods": ",".join(config.methods),
                    "features": ",".join(features),
                    "scaling": config.scaling,
                    "k_range": f"{config.k_min}-{config.k_max}",
                    "chosen": f"{method} {param}",
                    "n_customers": len(current),
                    "monetary_basis": basis,
                    "refit": config.refit,
                }
            )
            mlflow_tracking.log_children(
                context,
                parent,
                [
                    (
                        f"{row['method']} {row['param']}",
                        {"method": row["method"], "param": row["param"]},
                        {
                            k: float(v)
                            for k, v in row.items()
                            if isinstance(v, int | float) and np.isfinite(v)
                        },
                    )
                    for row in rows
                ],
            )
            summary = {
                k: float(v)
                for k, v in chosen_row.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            }
            mlflow.log_metrics(summary)
            for col, (eta, omega) in rfm_eta.items():
                mlflow.log_metrics({f"{col}_forecast_eta2": eta, f"{col}_forecast_omega2": omega})
            segmenter = make_pipeline(
                FunctionTransformer(
                    transform_columns, kw_args={"skewed": [f in SKEWED for f in features]}
                ),
                scaler,
                FunctionTransformer(winsorise),
                # Fitted on the customers themselves, so its centroids are the segments' means.
                NearestCentroid().fit(x_final, np.array([segment_of[label] for label in labels])),
            )
            with tempfile.TemporaryDirectory() as tmp:
                for name, png in charts.items():
                    Path(tmp, name.lower().replace(" ", "_") + ".png").write_bytes(png)
                table.to_csv(Path(tmp, "candidates.csv"), index=False)
                profiles.drop(columns=["label"]).to_csv(
                    Path(tmp, "segment_profiles.csv"), index=False
                )
                mlflow.log_artifacts(tmp, artifact_path="report")
            mlflow.sklearn.log_model(
                segmenter,
                name="segmenter",
                pip_requirements=["scikit-learn"],
                registered_model_name=REGISTERED_MODEL,
                # The pipeline's first step is our own picklable function; skops must be told so.
                skops_trusted_types=[
                    "seg_pipeline.lib.segmentation.features.transform_columns",
                    "seg_pipeline.lib.segmentation.features.winsorise",
                ],
            )
            migration, n_history, n_dates = written.result()

    phases.lap("charts, mlflow logging and tables written")
    if len(migration) and migration["from_date"].notna().any():
        matrix = migration.pivot_table(
            index="from_segment",
            columns="to_segment",
            values="n_customers",
            aggfunc="sum",
            fill_value=0,
        )
        charts["Segment migration"] = plots.migration_chart(matrix, "Segment migration")
    report_path = settings.published_path.with_name(
        settings.published_path.stem + "_segment_report.html"
    )
    facts = {
        "as of": str(as_of),
        "method": f"{method} {param}",
        "features": ", ".join(features),
        "customers": f"{len(current):,}",
    }
    if "forecast_eta2" in chosen_row:
        facts["next-period spend explained (eta²)"] = (
            f"segments {chosen_row['forecast_eta2']:.3f}; named RFM segments "
            f"{rfm_eta['rfm_segment'][0]:.3f}; 125 RFM cells {rfm_eta['rfm_cell'][0]:.3f}"
        )
    report_path.write_text(segment_report("Customer segments", profiles, charts, facts))
    with mlflow_tracking.start_run(
        context, "segmentation", run_name="report", parent_run_id=model_run_id
    ):
        mlflow.log_artifact(str(report_path), artifact_path="report")
    phases.lap("report")
    timing = phases.report(context.log, "behavioural_segments")

    figures = {
        "method": f"{method} {param}",
        "segments": len(profiles),
        "model_run_id": model_run_id,
        "report": str(report_path),
        **timing,
    }
    for key in ("silhouette", "forecast_eta2", "forecast_omega2"):
        if key in chosen_row and np.isfinite(chosen_row[key]):
            figures[key] = float(chosen_row[key])
    for col, (eta, omega) in rfm_eta.items():
        figures[f"{col}_forecast_eta2"] = eta
        figures[f"{col}_forecast_omega2"] = omega
    md = {
        name: dg.MetadataValue.md(plots.markdown_image(png, name)) for name, png in charts.items()
    }
    yield dg.MaterializeResult(
        asset_key="customer_segments",
        metadata={
            **figures,
            "dagster/row_count": len(segments),
            "candidates": dg.MetadataValue.md(table.round(4).to_markdown(index=False)),
            **{
                k: v
                for k, v in md.items()
                if k in ("Choosing the number of segments", "Dendrogram")
            },
        },
    )
    yield dg.MaterializeResult(
        asset_key="segment_profiles",
        metadata={
            **figures,
            "dagster/row_count": len(table_out),
            "segments_table": dg.MetadataValue.md(
                table_out[["segment_id", "segment_name", "n_customers", "share", "description"]]
                .round(3)
                .to_markdown(index=False)
            ),
            **{k: v for k, v in md.items() if k in ("Segment sizes", "RFM grid")},
        },
    )
    yield dg.MaterializeResult(
        asset_key="segment_history",
        metadata={"dagster/row_count": n_history, "snapshot_dates": n_dates},
    )
    yield dg.MaterializeResult(
        asset_key="segment_migration",
        metadata={
            "dagster/row_count": len(migration),
            **{k: v for k, v in md.items() if k == "Segment migration"},
        },
    )


def _write_tables(duckdb: DuckDBResource, segments, table_out, stored, run_row: dict):
    """Replace the segment tables, snapshot them into the history and record the run, in one
    transaction. ``run_row`` is the ``segmentation_runs`` row (``a`` its as_of, ``r`` its run id).

    Returns the behavioural migration rows and the history's row and date counts.
    """
    with duckdb.get_connection() as con:
        for name, frame in (
            ("segments_df", segments),
            ("profiles_df", table_out),
            ("centroids_df", stored),
        ):
            con.register(name, frame)
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
        con.execute(
            "create or replace table segment_centroids as "
            "select * replace (centroid::double[] as centroid, "
            "rfm_centroid::double[] as rfm_centroid) from centroids_df"
        )
        _write_history(con, run_row["a"], run_row["r"])
        con.execute(
            """
            create table if not exists segmentation_runs (as_of date, run_id varchar,
                method varchar, param varchar, n_segments integer, silhouette double,
                forecast_eta2 double, forecast_omega2 double, rfm_segment_eta2 double,
                rfm_cell_eta2 double)
            """
        )
        con.execute("delete from segmentation_runs where as_of = $a", {"a": run_row["a"]})
        con.execute(
            "insert into segmentation_runs values ($a, $r, $m, $p, $n, $s, $e, $o, $re, $ce)",
            run_row,
        )
        con.execute("commit")
        migration = con.execute("select * from segment_migration where kind = 'behavioural'").df()
        n_history, n_dates = con.execute(
            "select count(*), count(distinct as_of) from segment_history"
        ).fetchall()[0]

    return migration, n_history, n_dates


def _unique(names: list[str], ids: list[str], inherited: list[str | None]) -> list[str]:
    """Inherited names win; a new segment whose derived name is taken gets its id appended."""
    taken = {n for n, i in zip(names, inherited, strict=True) if i}
    out = []
    for name, sid, inh in zip(names, ids, inherited, strict=True):
        if not inh and name in taken:
            name = f"{name} ({sid})"
        taken.add(name)
        out.append(name)
    return out


def _write_history(con, as_of, run_id: str) -> None:
    """Snapshot today's segments into segment_history and rebuild segment_migration."""
    con.execute(
        """
        create table if not exists segment_history (as_of date, customer_id varchar,
            segment_id varchar, segment_name varchar, rfm_segment varchar, run_id varchar)
        """
    )
    con.execute("delete from segment_history where as_of = $a", {"a": as_of})
    con.execute(
        """
        insert into segment_history
        select $a, s.customer_id, s.segment_id, s.segment_name, r.rfm_segment, $r
        from customer_segments s join customer_rfm r using (customer_id)
        """,
        {"a": as_of, "r": run_id},
    )
    con.execute(
        """
        create or replace table segment_migration as
        with dates as (select distinct as_of from segment_history order by as_of desc limit 2),
        bounds as (select max(as_of) as to_date,
                          case when count(*) = 2 then min(as_of) end as from_date from dates),
        before as (select h.* from segment_history h, bounds where h.as_of = bounds.from_date),
        after as (select h.* from segment_history h, bounds where h.as_of = bounds.to_date),
        pairs as (
            select 'behavioural' as kind, coalesce(b.segment_name, '(new)') as from_segment,
                   coalesce(a.segment_name, '(gone)') as to_segment
            from before b full outer join after a using (customer_id)
            union all
            select 'rfm', coalesce(b.rfm_segment, '(new)'), coalesce(a.rfm_segment, '(gone)')
            from before b full outer join after a using (customer_id)
        ),
        counted as (select kind, from_segment, to_segment, count(*) as n_customers
                    from pairs group by all)
        select bounds.from_date, bounds.to_date, kind, from_segment, to_segment, n_customers,
               n_customers / sum(n_customers) over (partition by kind, from_segment)
                   as share_of_from,
               $r as run_id
        from counted, bounds
        order by kind, from_segment, to_segment
        """,
        {"r": run_id},
    )
