"""Checks on ingested data."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.engine import SqlEngine


@dg.asset_check(
    asset="raw_events",
    blocking=True,
    description="rows read = rows used + rows quarantined, from the tables themselves.",
)
def rows_reconcile(duckdb: DuckDBResource, engine: SqlEngine) -> dg.AssetCheckResult:
    """Recount both tables so a lost row is caught even if the ingest code miscounted (in
    Spark, where the Spark engine keeps the events)."""
    sql = _reconcile_sql("ingest_manifest", "raw_events", "quarantined_events")
    if engine.is_spark:
        row = engine.session().sql(sql.format(schema=f"{engine.work_schema}.")).collect()[0]
        return _reconciled(*row)
    with duckdb.get_connection() as con:
        return _reconciled(*con.execute(sql.format(schema="")).fetchall()[0])


@dg.asset_check(
    asset="raw_impressions",
    blocking=True,
    description="Impression rows read = rows used + rows quarantined (+ erased), from the tables.",
)
def impression_rows_reconcile(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    sql = _reconcile_sql("impressions_manifest", "raw_impressions", "quarantined_impressions")
    with duckdb.get_connection() as con:
        return _reconciled(*con.execute(sql.format(schema="")).fetchall()[0])


def _reconcile_sql(manifest: str, used_table: str, quarantined_table: str) -> str:
    """The rows a manifest says were read, the rows of the used and quarantined tables, and
    the erased rows (counted but never stored); ``{schema}`` prefixes the tables."""
    return (
        f"select rows_read, (select count(*) from {{schema}}{used_table}), "
        f"(select count(*) from {{schema}}{quarantined_table}), rows_erased "
        f"from {{schema}}{manifest}"
    )


def _reconciled(read: int, used: int, quarantined: int, erased: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bool(read == used + quarantined + erased),
        metadata={
            "rows_read": read,
            "rows_used": used,
            "rows_quarantined": quarantined,
            "rows_erased": erased,
        },
    )
