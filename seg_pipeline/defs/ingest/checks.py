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
    return _reconcile(duckdb, "ingest_manifest", "raw_events", "quarantined_events")


@dg.asset_check(
    asset="raw_impressions",
    blocking=True,
    description="Impression rows read = rows used + rows quarantined (+ erased), from the tables.",
)
def impression_rows_reconcile(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _reconcile(duckdb, "impressions_manifest", "raw_impressions", "quarantined_impressions")


def _reconcile(duckdb, manifest: str, used_table: str, quarantined_table: str):
    """The rows a manifest says were read against the rows of the used and quarantined tables
    (and the erased rows, counted but never stored)."""
    with duckdb.get_connection() as con:
        read, used, quarantined, erased = con.execute(
            f"select rows_read, (select count(*) from {used_table}), "
            f"(select count(*) from {quarantined_table}), rows_erased from {manifest}"
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
