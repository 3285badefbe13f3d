"""Checks on ingested data."""

import dagster as dg
from dagster_duckdb import DuckDBResource


@dg.asset_check(
    asset="raw_events",
    blocking=True,
    description="rows read = rows used + rows quarantined, from the tables themselves.",
)
def rows_reconcile(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    """Recount both tables so a lost row is caught even if the ingest code miscounted."""
    with duckdb.get_connection() as con:
        read, used, quarantined, erased = con.execute(
            "select rows_read, (select count(*) from raw_events), "
            "(select count(*) from quarantined_events), rows_erased from ingest_manifest"
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(read == used + quarantined + erased),
        metadata={
            "rows_read": read,
            "rows_used": used,
            "rows_quarantined": quarantined,
            "rows_erased": erased,
        },
    )


@dg.asset_check(
    asset="raw_impressions",
    blocking=True,
    description="Impression rows read = rows used + rows quarantined (+ erased), from the tables.",
)
def impression_rows_reconcile(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        read, used, quarantined, erased = con.execute(
            "select rows_read, (select count(*) from raw_impressions), "
            "(select count(*) from quarantined_impressions), rows_erased "
            "from impressions_manifest"
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(read == used + quarantined + erased),
        metadata={
            "rows_read": read,
            "rows_used": used,
            "rows_quarantined": quarantined,
            "rows_erased": erased,
        },
    )
