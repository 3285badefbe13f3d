"""dbt models (staging → intermediate → marts) as Dagster assets; dbt tests become asset checks."""

import fcntl
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from seg_pipeline.defs.dbt.invocation import (
    dbt_vars,
    parse_command,
    target_path,
    wait_for_parse,
)
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
    context, dbt: DbtCliResource, settings: PipelineSettings, extra_vars: dict | None = None
):
    """``dbt build`` of the selected models against the working database; dbt tests become the
    assets' checks."""
    wait_for_parse(settings.work_path)
    return dbt.cli(
        ["build", "--vars", dbt_vars(settings.work_path, context.run_id, **(extra_vars or {}))],
        context=context,
        target_path=target_path(settings.work_path),
    )


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
):
    """Build and test the staging, intermediate and mart models against the working database."""
    invocation = _build(context, dbt, settings)
    # dbt now starts in its own process, and this one would only wait for its events: the next
    # steps' MLflow start-up cost goes here.
    mlflow_tracking.warm_up()
    yield from invocation.stream()


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
):
    """Build and test the models over tonight's segments and lists: history, migration,
    cold-start lists and the one-row-per-customer customer_360."""
    overrides = {k: v for k, v in config.model_dump().items() if v is not None}
    yield from _build(context, dbt, settings, overrides).stream()
