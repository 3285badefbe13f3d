"""Publishing: swap the finished tables into the consumers' DuckDB file in one step."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.contract import CONTRACT_TABLES, PUBLISHED_TABLES
from seg_pipeline.lib.published_file import publish_tables


@dg.asset(deps=list(PUBLISHED_TABLES), group_name="publishing")
def published_database(
    context: dg.AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """The consumers' DuckDB file, replaced atomically with this run's tables."""
    with duckdb.get_connection() as con:
        union = " union all ".join(
            f"select '{t}' as table_name, run_id from {t} group by run_id" for t in CONTRACT_TABLES
        )
        stale = con.execute(
            f"select table_name, run_id from ({union}) where run_id <> $run_id order by 1",
            {"run_id": context.run_id},
        ).fetchall()
        if stale:
            names = ", ".join(sorted({t for t, _ in stale}))
            raise dg.Failure(
                f"not publishing: {names} were not rebuilt in this run; materialise the whole "
                "nightly_job so that consumers never see tables from two runs"
            )
        counts = publish_tables(
            con, settings.published_path, list(PUBLISHED_TABLES), run_id=context.run_id
        )
    return dg.MaterializeResult(
        metadata={
            "path": str(settings.published_path),
            "dagster/row_count": sum(counts.values()),
            **{f"rows.{t}": n for t, n in counts.items()},
        }
    )
