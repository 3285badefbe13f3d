"""dbt models (staging → intermediate → marts) as Dagster assets; dbt tests become asset checks."""

import fcntl
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_duckdb import DuckDBResource
from pydantic import Field

from seg_pipeline.defs.dbt.invocation import (
    dbt_vars,
    parse_command,
    run_id_in_environ,
    target_path,
    wait_for_parse,
)
from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.resources import MLflowTracking, PipelineSettings
from seg_pipeline.lib.paths import DBT_PROJECT_DIR


def manifest_is_stale(project: DbtProject) -> bool:
    """True when the manifest is missing or older than any model, seed, macro or project file."""
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [
        p for sub in ("models", "seeds", "macros") for p in (project.project_dir / sub).rglob("*")
    ]
    sources += [project.project_dir / "dbt_project.yml", project.project_dir / "profiles.yml"]
    return any(p.is_file() and p.stat().st_mtime > built for p in sources)


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
# target_path is relative to the project folder (dbt runs there), not to the caller's.
_target = DBT_PROJECT_DIR / dbt_project.target_path
_target.mkdir(parents=True, exist_ok=True)
with open(_target / ".parse.lock", "w") as _lock:
    # Processes that import the definitions at once on a fresh clone (two CLI runs, test
    # workers) parse one after the other, and the second finds the manifest fresh.
    fcntl.flock(_lock, fcntl.LOCK_EX)
    if manifest_is_stale(dbt_project):
        # The CLI, the tests and CI start from a clean clone where `dagster dev` never built
        # the manifest, and @dbt_assets needs it at import time: parse once here.
        subprocess.run(parse_command(dbt_project.target_path), check=True, cwd=DBT_PROJECT_DIR)


class Translator(DagsterDbtTranslator):
    """Puts each dbt model in a group named after its folder (staging, intermediate, marts)."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "seed":
            return "marts"
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "dbt"


# Models over the tables the Python steps write (segments, lists): built after them.
AFTER_PYTHON = "tag:after_python"


def _build(
    context,
    dbt: DbtCliResource,
    settings: PipelineSettings,
    engine: SqlEngine,
    extra_vars: dict | None = None,
):
    """``dbt build`` of the selected models on the run's engine (the working DuckDB file, or
    the Spark catalog); dbt tests become the assets' checks."""
    wait_for_parse(settings.work_path)
    if engine.is_spark:
        engine.session()  # fails early, with the endpoint named, when Spark is not reachable
    extra = {**engine.dbt_vars(), **(extra_vars or {})}
    with run_id_in_environ(context.run_id):
        return dbt.cli(
            ["build", *engine.dbt_args(), "--vars", dbt_vars(settings.work_path, **extra)],
            context=context,
            target_path=target_path(settings.work_path),
        )


def _collect(context, settings: PipelineSettings, engine: SqlEngine, duckdb, tables) -> None:
    """Bring the built models among ``tables`` to the driver's DuckDB file (Spark engine)."""
    built = {k.to_user_string() for k in context.selected_asset_keys}
    wanted = [t for t in tables if t in built]
    if engine.is_spark and wanted:
        with duckdb.get_connection() as con:
            engine.collect(con, wanted, settings.work_path)


# Models the Python steps read, and reporting models the checks and the report read.
MODELS_FOR_PYTHON = ["customer_rfm", "customer_features", "int_customer_item_daily", "item_catalog"]
REPORTING_FOR_PYTHON = [
    "segment_history",
    "segment_migration",
    "segment_recommendations",
    "customer_360",
]


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=Translator(),
    exclude=AFTER_PYTHON,
)
def dbt_models(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    settings: PipelineSettings,
    mlflow_tracking: MLflowTracking,
    engine: SqlEngine,
    duckdb: DuckDBResource,
):
    """Build and test the staging, intermediate and mart models on the run's engine."""
    invocation = _build(context, dbt, settings, engine)
    # dbt now starts in its own process, and this one would only wait for its events: the next
    # steps' MLflow start-up cost goes here.
    mlflow_tracking.warm_up()
    yield from invocation.stream()
    _collect(context, settings, engine, duckdb, MODELS_FOR_PYTHON)


class ReportingModelsConfig(dg.Config):
    """Overrides of the reporting models' dbt vars (default: those in dbt_project.yml)."""

    segment_recommendations_n: int | None = Field(
        default=None, description="Items per segment in segment_recommendations (dbt default 10)."
    )
    segment_popularity_window_days: int | None = Field(
        default=None,
        description="Only purchases this recent count for segment_recommendations (default 180).",
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=Translator(),
    select=AFTER_PYTHON,
    name="dbt_reporting_models",
)
def dbt_reporting_models(
    context: dg.AssetExecutionContext,
    config: ReportingModelsConfig,
    dbt: DbtCliResource,
    settings: PipelineSettings,
    engine: SqlEngine,
    duckdb: DuckDBResource,
):
    """Build and test the models over tonight's segments and lists: history, migration,
    cold-start lists and the one-row-per-customer customer_360."""
    overrides = {k: v for k, v in config.model_dump().items() if v is not None}
    yield from _build(context, dbt, settings, engine, overrides).stream()
    _collect(context, settings, engine, duckdb, REPORTING_FOR_PYTHON)
