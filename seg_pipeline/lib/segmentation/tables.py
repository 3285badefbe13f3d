"""Reading the segmentation inputs from, and writing its tables to, the DuckDB work database.

Only what Python computes is written here (segments, profiles, the stored model, the run's
figures). The history snapshot and the migration table are SQL over these, so they are dbt
models (``segment_history``, ``segment_migration``).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from seg_pipeline.lib.segmentation.nightly import SegmentationNight
from seg_pipeline.lib.segmentation.stability import LAGS
from seg_pipeline.lib.segmentation.value import ValueForecast


def frame(con: duckdb.DuckDBPyConnection, query: str, params: dict | None = None) -> pd.DataFrame:
    """A query's result as pandas through Arrow: text stays Arrow-backed instead of becoming a
    Python object per value, which matters at a million customers."""
    out = con.sql(query, params=params).to_arrow_table().to_pandas(date_as_object=False)
    for column in out.columns:
        if out[column].dtype == "datetime64[ms]":  # Arrow dates; DuckDB's .df() gives us
            out[column] = out[column].astype("datetime64[us]")
    return out


def load_features(con: duckdb.DuckDBPyConnection, snapshot: str) -> pd.DataFrame:
    """``customer_features`` at one cut (``current`` or ``holdout``), in customer_id order.

    Money comes as DOUBLE: DECIMAL columns arrive as Python Decimal objects, which made loading
    and the profiles' group means slow at a million customers.
    """
    return frame(
        con,
        """
        select * replace (monetary::double as monetary,
                          next_period_value::double as next_period_value)
        from customer_features where snapshot = $s order by customer_id
        """,
        {"s": snapshot},
    )


def load_rfm(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The RFM columns the segment report draws, in customer_id order."""
    return frame(
        con,
        "select customer_id, r_score, f_score, m_score, monetary::double as monetary, "
        "rfm_segment, monetary_basis, as_of from customer_rfm order by customer_id",
    )


def _exist(con: duckdb.DuckDBPyConnection, *names: str) -> bool:
    """Whether every one of the tables exists (a work file before its first night has none)."""
    found = con.execute(
        "select count(distinct table_name) from information_schema.tables "
        "where table_name in (select unnest($names))",
        {"names": list(names)},
    ).fetchall()[0][0]
    return found == len(names)


def load_stored_model(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    """The last run's segments (``segment_centroids``), or None before the first run."""
    if not _exist(con, "segment_centroids"):
        return None
    return con.execute("select * from segment_centroids order by segment_id").df()


def load_last_night(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, object] | None:
    """The last run's ``customer_segments`` (customer_id, segment_id) and its as-of date, or
    None before the first run."""
    if not _exist(con, "customer_segments", "segment_centroids"):
        return None
    as_of = con.execute("select max(as_of) from segment_centroids").fetchall()[0][0]
    return frame(con, "select customer_id, segment_id from customer_segments"), as_of


def load_recent_history(con: duckdb.DuckDBPyConnection, as_of) -> pd.DataFrame | None:
    """``segment_history``'s snapshots one day and one week before ``as_of`` (None before the
    first snapshot), for the stability of tonight's segments."""
    if as_of is None or not _exist(con, "segment_history"):
        return None
    return frame(
        con,
        "select as_of, customer_id, segment_id, rfm_segment from segment_history "
        "where as_of in ($d::date - 1, $d::date - 7)",
        {"d": as_of},
    )


def write_segment_tables(
    con: duckdb.DuckDBPyConnection,
    night: SegmentationNight,
    *,
    model_run_id: str,
    run_id: str,
    with_segments: bool = True,
) -> None:
    """Replace the segment tables and record the run in ``segmentation_runs``, in one
    transaction; ``customer_segments`` only ``with_segments`` (the Spark engine writes it in
    Spark)."""
    segments = night.segments.assign(model_run_id=model_run_id, run_id=run_id)
    profiles = night.profiles.drop(columns=["label"]).assign(
        method=night.sweep.method, model_run_id=model_run_id, run_id=run_id
    )
    centroids = night.centroids.assign(run_id=run_id)
    run_row = {**night.run_row(), "run_id": run_id}
    for name, value in (
        ("segments_df", segments),
        ("profiles_df", profiles),
        ("centroids_df", centroids),
    ):
        con.register(name, value)
    con.execute("begin transaction")
    if with_segments:
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
               expected_spend::double as expected_spend,
               buy_again_share::double as buy_again_share, rule::varchar as rule,
               description, method, model_run_id, run_id
        from profiles_df
        """
    )
    con.execute(
        "create or replace table segment_centroids as "
        "select * replace (centroid::double[] as centroid, "
        "rfm_centroid::double[] as rfm_centroid, scaler_center::double[] as scaler_center, "
        "scaler_scale::double[] as scaler_scale, fitted_as_of::date as fitted_as_of, "
        "fitted_forecast_omega2::double as fitted_forecast_omega2, rule::varchar as rule) "
        "from centroids_df"
    )
    con.execute(
        """
        create table if not exists segmentation_runs (as_of date, run_id varchar,
            method varchar, param varchar, n_segments integer, silhouette double,
            forecast_eta2 double, forecast_omega2 double, rfm_segment_eta2 double,
            rfm_cell_eta2 double, note varchar)
        """
    )
    # Work files from before these were recorded lack the columns.
    for column, kind in (
        ("note", "varchar"),
        ("refit", "boolean"),
        ("decision", "varchar"),
        ("fitted_as_of", "date"),
        ("rfm_segment_omega2", "double"),
        ("rfm_cell_omega2", "double"),
        *((f"{kind}_kept_{lag}", "double") for lag in LAGS for kind in ("segment", "rfm_segment")),
    ):
        con.execute(f"alter table segmentation_runs add column if not exists {column} {kind}")
    con.execute("delete from segmentation_runs where as_of = $as_of", {"as_of": night.as_of})
    con.execute(
        "insert into segmentation_runs by name select $as_of::date as as_of, $run_id as run_id, "
        "$method as method, $param as param, $n_segments as n_segments, "
        "$silhouette::double as silhouette, $forecast_eta2::double as forecast_eta2, "
        "$forecast_omega2::double as forecast_omega2, "
        "$rfm_segment_eta2::double as rfm_segment_eta2, $rfm_cell_eta2::double as rfm_cell_eta2, "
        "$note as note, $refit as refit, $decision as decision, "
        "$fitted_as_of::date as fitted_as_of, $rfm_segment_omega2::double as rfm_segment_omega2, "
        "$rfm_cell_omega2::double as rfm_cell_omega2"
        + "".join(f", ${column}::double as {column}" for column in run_row if "_kept_" in column),
        run_row,
    )
    con.execute("commit")
    for name in ("segments_df", "profiles_df", "centroids_df"):
        con.unregister(name)


def write_value_forecast(
    con: duckdb.DuckDBPyConnection,
    value: ValueForecast | None,
    *,
    horizon: int | None,
    model_run_id: str | None,
    run_id: str,
) -> None:
    """Replace ``customer_value_forecast`` and ``value_forecast_calibration`` in one transaction
    (both empty when the holdout could not support a forecast)."""
    forecast = (
        value.forecast
        if value is not None
        else pd.DataFrame(
            {"customer_id": pd.Series(dtype=str), "expected_spend": [], "buy_probability": []}
        )
    )
    calibration = value.calibration if value is not None else pd.DataFrame({"decile": []})
    con.register("forecast_df", forecast)
    con.register("calibration_df", calibration)
    con.execute("begin transaction")
    con.execute(
        """
        create or replace table customer_value_forecast as
        select customer_id::varchar as customer_id, expected_spend::double as expected_spend,
               buy_probability::double as buy_probability, $horizon::integer as horizon_days,
               $model_run_id::varchar as model_run_id, $run_id as run_id
        from forecast_df
        """,
        {"horizon": horizon, "model_run_id": model_run_id, "run_id": run_id},
    )
    con.execute(
        "create or replace table value_forecast_calibration as "
        "select *, $run_id as run_id from calibration_df",
        {"run_id": run_id},
    )
    con.execute("commit")
    con.unregister("forecast_df")
    con.unregister("calibration_df")


def load_calibration(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The value forecast's calibration by decile (empty before the first forecast)."""
    if not _exist(con, "value_forecast_calibration"):
        return pd.DataFrame()
    return frame(con, "select * from value_forecast_calibration order by decile")


def load_report_inputs(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """What the segment report shows: the profiles in id order, this run's
    ``segmentation_runs`` row (with the feature list and the customer count) and the behavioural
    rows of ``segment_migration``."""
    profiles = frame(
        con, "select * from segment_profiles order by cast(substr(segment_id, 2) as integer)"
    )
    cursor = con.execute(
        """
        select r.*, c.features, (select count(*) from customer_segments) as n_customers
        from segmentation_runs r, (select any_value(features) as features from segment_centroids) c
        where r.run_id = (select any_value(run_id) from segment_profiles)
        """
    )
    names = [d[0] for d in cursor.description]
    run = dict(zip(names, cursor.fetchall()[0], strict=True))
    migration = frame(con, "select * from segment_migration where kind = 'behavioural'")
    return profiles, run, migration
