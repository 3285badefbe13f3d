"""Checks that guard the published segments."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from seg_pipeline.lib.drift import relative_drop


@dg.asset_check(
    asset="customer_segments",
    blocking=True,
    description="Every purchasing customer has exactly one segment, and no one else has one.",
)
def one_segment_per_customer(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        eligible, rows, distinct, unknown = con.execute(
            """
            select (select count(*) from customer_rfm),
                   count(*), count(distinct customer_id),
                   count(*) filter (where customer_id not in (select customer_id from customer_rfm))
            from customer_segments
            """
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(eligible == rows == distinct and unknown == 0),
        metadata={
            "eligible_customers": eligible,
            "rows": rows,
            "distinct_customers": distinct,
            "customers_not_in_rfm": unknown,
        },
    )


@dg.asset_check(
    asset="segment_profiles",
    blocking=True,
    description="No segment is empty and every assigned segment has a profile.",
)
def no_empty_segment(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        empty, unprofiled, mismatched = con.execute(
            """
            with assigned as (select segment_id, count(*) as n from customer_segments group by all)
            select
                (select count(*) from segment_profiles p
                 where p.n_customers = 0 or p.segment_id not in (select segment_id from assigned)),
                (select count(*) from assigned a
                 where a.segment_id not in (select segment_id from segment_profiles)),
                (select count(*) from segment_profiles p join assigned a using (segment_id)
                 where p.n_customers <> a.n)
            """
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(empty == 0 and unprofiled == 0 and mismatched == 0),
        metadata={
            "empty_segments": empty,
            "segments_without_profile": unprofiled,
            "profiles_with_wrong_count": mismatched,
        },
    )


@dg.asset_check(
    asset="segment_profiles",
    blocking=False,
    description="Warns when one segment holds more than 60% of customers.",
)
def no_dominant_segment(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        largest = con.execute("select max(share) from segment_profiles").fetchall()[0][0]
    return dg.AssetCheckResult(
        passed=bool(largest <= 0.6),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"largest_share": float(largest)},
    )


@dg.asset_check(
    asset="customer_segments",
    blocking=False,
    description="Warns when the segments' forecast power (omega squared of next-period spend) "
    "fell by more than 25% since the last run date: what decides the segments, measured on "
    "refit nights and between refits alike.",
)
def forecast_power_stable(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        rows = con.execute(
            "select as_of, forecast_omega2 from segmentation_runs "
            "where forecast_omega2 is not null order by as_of desc limit 2"
        ).fetchall()
    passed, metadata = relative_drop(rows, 0.25, "forecast_omega2")
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )


@dg.asset_check(
    asset="customer_segments",
    blocking=False,
    description="Warns when the shop's data supported fewer segments than configured (a "
    "handful of customers, or all alike), and says why.",
)
def segments_supported_by_data(
    context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource
) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        note = con.execute(
            "select any_value(note) from segmentation_runs where run_id = $run_id",
            {"run_id": context.op_execution_context.run_id},
        ).fetchall()[0][0]
    return dg.AssetCheckResult(
        passed=note is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=note,
        metadata={"why": note or "the sweep ran as configured"},
    )
