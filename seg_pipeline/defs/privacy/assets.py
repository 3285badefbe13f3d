"""Privacy: erasure requests (GDPR article 17) as an asset the UI can materialise with config."""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.resources import MLflowTracking, PipelineSettings
from seg_pipeline.lib.privacy import ensure_privacy_tables, forget_customers
from seg_pipeline.lib.spark.privacy import forget_in_spark


class ErasureConfig(dg.Config):
    """Customers to erase in this materialisation."""

    customer_ids: list[str] = Field(
        default_factory=list,
        description="Customer ids to erase from every table, the published file and later ingests.",
    )


@dg.asset(group_name="privacy")
def customer_erasures(
    context: dg.AssetExecutionContext,
    config: ErasureConfig,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    mlflow_tracking: MLflowTracking,
    engine: SqlEngine,
) -> dg.MaterializeResult:
    """Keyed hashes of erased customers; materialise with customer_ids to erase them everywhere."""
    settings.work_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.get_connection() as con:
        ensure_privacy_tables(con)
        report = {}
        if config.customer_ids:
            report = forget_customers(
                con,
                config.customer_ids,
                settings.key(),
                published=settings.published_path,
                artifact_root=mlflow_tracking.artifact_root(),
            )
        total = con.execute("select count(*) from erased_customers").fetchall()[0][0]
    if config.customer_ids and engine.is_spark:
        report["deleted"] = {
            **report.get("deleted", {}),
            **forget_in_spark(engine.session(), config.customer_ids, engine.schemas()),
        }
    if report.get("artifacts_mentioning"):
        raise dg.Failure(
            f"erased from tables, but MLflow artefacts still mention the id: "
            f"{', '.join(report['artifacts_mentioning'][:3])}"
        )
    context.log.info(f"erased {len(config.customer_ids)} customer(s): {report.get('deleted', {})}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "erased_now": len(config.customer_ids),
            "rows_deleted": dg.MetadataValue.json(report.get("deleted", {})),
        }
    )
