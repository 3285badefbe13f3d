"""The single entry point: every asset, check, resource, job and schedule of seg_pipeline."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.dbt.assets import dbt_models, dbt_project, dbt_reporting_models
from seg_pipeline.defs.dbt.invocation import dbt_executable
from seg_pipeline.defs.dbt.resources import LocalDbtCliResource
from seg_pipeline.defs.engine import SqlEngine, engine_from_env
from seg_pipeline.defs.ingest import assets as ingest_assets
from seg_pipeline.defs.ingest import checks as ingest_checks
from seg_pipeline.defs.privacy import assets as privacy_assets
from seg_pipeline.defs.publishing import assets as publishing_assets
from seg_pipeline.defs.recommendations import assets as recommendation_assets
from seg_pipeline.defs.recommendations import checks as recommendation_checks
from seg_pipeline.defs.resources import PipelineSettings, settings_from_env, tracking_from
from seg_pipeline.defs.schedules import nightly_job, nightly_schedule
from seg_pipeline.defs.segmentation import assets as segmentation_assets
from seg_pipeline.defs.segmentation import checks as segmentation_checks


def build_resources(
    settings: PipelineSettings, tracking_uri: str | None = None, engine: SqlEngine | None = None
) -> dict:
    """Resources for one configuration; the CLI and the tests build their own from arguments."""
    return {
        "settings": settings,
        "engine": engine or SqlEngine(),
        # DuckDB would otherwise cache up to 80% of RAM; past this limit it spills to disk.
        "duckdb": DuckDBResource(
            database=str(settings.work_path), connection_config={"memory_limit": "3GB"}
        ),
        "dbt": LocalDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
        "mlflow_tracking": tracking_from(tracking_uri),
    }


def build_definitions(
    settings: PipelineSettings,
    tracking_uri: str | None = None,
    loggers: dict[str, dg.LoggerDefinition] | None = None,
    engine: SqlEngine | None = None,
) -> dg.Definitions:
    """Assemble the Definitions for the given settings (and extra loggers, as the CLI's)."""
    modules = [
        privacy_assets,
        ingest_assets,
        segmentation_assets,
        recommendation_assets,
        publishing_assets,
    ]
    check_modules = [ingest_checks, segmentation_checks, recommendation_checks]
    return dg.Definitions(
        assets=[dbt_models, dbt_reporting_models, *dg.load_assets_from_modules(modules)],
        asset_checks=dg.load_asset_checks_from_modules(check_modules),
        jobs=[nightly_job],
        schedules=[nightly_schedule],
        resources=build_resources(settings, tracking_uri, engine),
        # DuckDB takes one writer process: run every step in one process, one after another.
        executor=dg.in_process_executor,
        loggers=loggers,
    )


# Settings, the engine and the MLflow URI come from the contract's environment variables for
# `dagster dev` and the schedule.
defs = build_definitions(settings_from_env(), engine=engine_from_env())
