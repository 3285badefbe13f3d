"""Publishing: swap the finished tables into the consumers' DuckDB file, or into the Spark
catalog, in one step."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.contract import CONTRACT_TABLES, PUBLISHED_TABLES
from seg_pipeline.lib.published_file import publish_tables

# Every contract table's run ids, to refuse publishing tables from two runs.
_STALE_SQL = " union all ".join(
    f"select '{t}' as table_name, run_id from {{schema}}{t} group by run_id"
    for t in CONTRACT_TABLES
)


def _refuse_stale(stale: list, run_id: str) -> None:
    stale = [(t, r) for t, r in stale if r != run_id]
    if stale:
        names = ", ".join(sorted({t for t, _ in stale}))
        raise dg.Failure(
            f"not publishing: {names} were not rebuilt in this run; materialise the whole "
            "nightly_job so that consumers never see tables from two runs"
        )


@dg.asset(deps=list(PUBLISHED_TABLES), group_name="publishing")
def published_database(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    engine: SqlEngine,
) -> dg.MaterializeResult:
    """The consumers' tables, replaced with this run's at once: a new DuckDB file swapped in
    atomically, or on Spark versioned tables behind views switched together."""
    if engine.is_spark:
        spark = engine.session()
        sql = _STALE_SQL.format(schema=f"{engine.work_schema}.")
        _refuse_stale([(r[0], r[1]) for r in spark.sql(sql).collect()], context.run_id)
        from seg_pipeline.lib.spark.tables import publish_in_spark

        counts = publish_in_spark(
            spark,
            list(PUBLISHED_TABLES),
            engine.work_schema,
            engine.published_schema,
            context.run_id,
        )
        where = f"spark: {engine.published_schema} ({engine.remote()})"
    else:
        with duckdb.get_connection() as con:
            stale = con.execute(_STALE_SQL.format(schema="")).fetchall()
            _refuse_stale(stale, context.run_id)
            counts = publish_tables(
                con, settings.published_path, list(PUBLISHED_TABLES), run_id=context.run_id
            )
        where = str(settings.published_path)
    return dg.MaterializeResult(
        metadata={
            "path": where,
            "dagster/row_count": sum(counts.values()),
            **{f"rows.{t}": n for t, n in counts.items()},
        }
    )
